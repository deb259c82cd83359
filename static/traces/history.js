// The history page: "Compare selected" is on with exactly two traces ticked, and goes straight
// to the compare page with them as A and B. Without script the form sends the ticked traces and
// the compare page says if there were not two. "Add to dataset", when the page offers it, is on
// with any trace ticked and posts the ticked traces (the boxes belong to the compare form).
const form = document.querySelector("[data-compare-picks]");
const button = form.querySelector("[data-compare-button]");
const hint = form.querySelector("[data-compare-hint]");
const boxes = () => [...document.querySelectorAll("input[data-pick]")];
const picked = () => boxes().filter((box) => box.checked).map((box) => box.value);

const adding = document.querySelector("[data-add-to-dataset]");

function update() {
  const count = picked().length;
  button.disabled = count !== 2;
  if (adding) adding.querySelector("[data-add-button]").disabled = count === 0;
  hint.textContent = [
    "Tick two traces to compare them side by side.",
    "Tick one more trace to compare.",
    "Two traces ticked.",
  ][count] ?? `${count} traces ticked: tick exactly two.`;
  form.dataset.picked = String(count);
}

document.addEventListener("change", (event) => {
  if (event.target.matches("input[data-pick]")) adding?.addEventListener("submit", () => {
  adding.querySelectorAll("input[name=trace]").forEach((input) => input.remove());
  for (const id of picked()) adding.append(Object.assign(document.createElement("input"), {type: "hidden", name: "trace", value: id}));
});

update();
});

form.addEventListener("submit", (event) => {
  const [a, b, ...rest] = picked();
  if (!b || rest.length) return;  // the server says what is wrong
  event.preventDefault();
  const query = new URLSearchParams({a, b});
  window.location.assign(`${form.action}?${query}`);
});

adding?.addEventListener("submit", () => {
  adding.querySelectorAll("input[name=trace]").forEach((input) => input.remove());
  for (const id of picked()) adding.append(Object.assign(document.createElement("input"), {type: "hidden", name: "trace", value: id}));
});

update();
