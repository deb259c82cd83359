// The history page: "Compare selected" is on with exactly two traces ticked, and goes straight
// to the compare page with them as A and B. Without script the form sends the ticked traces and
// the compare page says if there were not two.
const form = document.querySelector("[data-compare-picks]");
const button = form.querySelector("[data-compare-button]");
const hint = form.querySelector("[data-compare-hint]");
const boxes = () => [...document.querySelectorAll("input[data-pick]")];
const picked = () => boxes().filter((box) => box.checked).map((box) => box.value);

function update() {
  const count = picked().length;
  button.disabled = count !== 2;
  hint.textContent = [
    "Tick two traces to compare them side by side.",
    "Tick one more trace to compare.",
    "Two traces ticked.",
  ][count] ?? `${count} traces ticked: tick exactly two.`;
  form.dataset.picked = String(count);
}

document.addEventListener("change", (event) => {
  if (event.target.matches("input[data-pick]")) update();
});

form.addEventListener("submit", (event) => {
  const [a, b, ...rest] = picked();
  if (!b || rest.length) return;  // the server says what is wrong
  event.preventDefault();
  const query = new URLSearchParams({a, b});
  window.location.assign(`${form.action}?${query}`);
});

update();
