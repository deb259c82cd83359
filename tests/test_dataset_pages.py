"""The dataset pages: the list and a new dataset (with a file imported whole or not at all), a
dataset's items added, edited and deleted, the experiments run on it and their progress; who may
see and change what with TRACE_REQUIRE_AUTH on."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from evals.datasets import Item, add_items
from evals.models import Dataset, DatasetItem, Experiment, ExperimentItem

pytestmark = pytest.mark.django_db

QUESTIONS = [
    Item("how many orders per country?", "SELECT country, COUNT(*) FROM orders GROUP BY country"),
    Item("which country has the most users?", expected_answer="Canada"),
    Item("show 10 users"),
]


def dataset(name: str = "shop", owner=None, items: list[Item] = QUESTIONS) -> Dataset:
    made, _ = add_items(name, owner.pk if owner else None, items, description=f"the {name} questions")
    return made


def experiment(of: Dataset, name: str = "first", *, owner=None, passed: list[bool | None] | None = None, **fields):
    """An experiment on ``of``, finished with ``passed`` as its items' verdicts (running without)."""
    made = Experiment.objects.create(
        dataset=of, name=name, owner=owner, model="builtin", started_at=timezone.now(), **fields
    )
    for item, verdict in zip(of.items.order_by("id"), passed or [], strict=False):
        ExperimentItem.objects.create(experiment=made, item=item, passed=verdict, execution="equal" if verdict else "")
    return made


def upload(name: str, text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="application/octet-stream")


def test_the_list_shows_each_dataset_with_its_counts_and_latest_accuracy_in_constant_queries(
    client, django_assert_max_num_queries
):
    for number in range(12):
        shop = dataset(f"shop-{number:02}")
        experiment(shop, "old", summary={"execution_accuracy": 0.25}, status=Experiment.Status.FINISHED)
        experiment(shop, "new", summary={"execution_accuracy": 0.5}, status=Experiment.Status.FINISHED)
    dataset("empty", items=[])
    with django_assert_max_num_queries(3):
        response = client.get(reverse("evals:datasets"))
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("data-dataset=") == 13
    row = page[page.index("shop-03") :]
    row = row[: row.index("</tr>")]
    assert ">3</td>" in row and ">2</td>" in row and "50.0%" in row  # items, experiments, the newest's accuracy
    empty = page[page.index(">empty<") :]
    assert "none yet" in empty[: empty.index("</tr>")]
    assert 'href="/datasets/"' in page  # the navigation's link


def test_the_dataset_page_is_a_constant_number_of_queries(client, django_assert_max_num_queries):
    shop = dataset(items=QUESTIONS * 20)
    for number in range(8):
        experiment(shop, f"run {number}", passed=[True, False, None] * 20)
    with django_assert_max_num_queries(8):
        response = client.get(reverse("evals:dataset", args=[shop.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("data-item=") == 60 and page.count("data-experiment-row=") == 8
    assert page.count('data-verdict="passed"') == 20 and page.count('data-verdict="failed"') == 20


def test_it_creates_a_dataset_with_the_items_of_a_file(client):
    lines = [
        {"question": "how many users?", "expected_sql": "SELECT COUNT(*) FROM users", "metadata": {"level": 1}},
        {"question": "显示用户表的10条用户数据", "expected_answer": "Alice"},
    ]
    file = upload("questions.jsonl", "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n")
    response = client.post(
        reverse("evals:datasets"), {"name": "mine", "description": "my questions", "file": file}, follow=True
    )
    made = Dataset.objects.get(name="mine")
    assert response.redirect_chain == [(reverse("evals:dataset", args=[made.pk]), 302)]
    assert made.description == "my questions" and made.owner is None
    assert list(made.items.values("question", "expected_sql", "expected_answer", "metadata")) == [
        {
            "question": "how many users?",
            "expected_sql": "SELECT COUNT(*) FROM users",
            "expected_answer": "",
            "metadata": {"level": 1},
        },
        {"question": "显示用户表的10条用户数据", "expected_sql": "", "expected_answer": "Alice", "metadata": {}},
    ]
    assert "created with 2 item(s)" in response.content.decode()


def test_it_creates_an_empty_dataset_and_refuses_a_name_taken(client):
    assert client.post(reverse("evals:datasets"), {"name": "mine"}).status_code == 302
    response = client.post(reverse("evals:datasets"), {"name": "mine"})
    assert response.status_code == 400
    assert "You already have a dataset of that name." in response.content.decode()
    assert Dataset.objects.filter(name="mine").count() == 1


def test_a_file_with_a_bad_line_is_not_imported_and_the_line_is_named(client):
    text = '{"question": "how many users?"}\n{"question": "bad", "expected_sqll": "SELECT 1"}\nnot json\n'
    response = client.post(reverse("evals:datasets"), {"name": "mine", "file": upload("questions.jsonl", text)})
    assert response.status_code == 400
    page = response.content.decode()
    assert "questions.jsonl:2: unknown field(s) expected_sqll" in page
    assert "questions.jsonl:3: not JSON" in page and "Nothing was imported" in page
    assert not Dataset.objects.filter(name="mine").exists() and not DatasetItem.objects.exists()

    shop = dataset()
    csv = "question,expected_sql\nfine,SELECT 1\n,SELECT 2\n"
    response = client.post(reverse("evals:dataset_import", args=[shop.pk]), {"file": upload("more.csv", csv)})
    assert response.status_code == 400
    assert "more.csv:3: &#x27;question&#x27; is missing or empty" in response.content.decode()
    assert shop.items.count() == len(QUESTIONS)

    response = client.post(reverse("evals:dataset_import", args=[shop.pk]), {"file": upload("more.csv", csv[:-11])})
    assert response.status_code == 302 and shop.items.count() == len(QUESTIONS) + 1


def test_items_are_added_edited_and_deleted_by_the_rules_of_a_files_lines(client):
    shop = dataset()
    add = reverse("evals:item_add", args=[shop.pk])
    response = client.post(add, {"question": "   ", "expected_sql": "SELECT 1"})
    assert response.status_code == 400
    assert "&#x27;question&#x27; is missing or empty" in response.content.decode()
    response = client.post(add, {"question": "top products?", "metadata": "[1, 2]"})
    assert response.status_code == 400 and "must be a JSON object" in response.content.decode()
    assert shop.items.count() == len(QUESTIONS)

    response = client.post(add, {"question": " top 5 products? ", "expected_sql": "SELECT name FROM products LIMIT 5"})
    assert response.status_code == 302
    item = shop.items.get(question="top 5 products?")  # trimmed, as an imported line's
    assert item.expected_sql == "SELECT name FROM products LIMIT 5"

    edit = reverse("evals:item", args=[shop.pk, item.pk])
    assert "top 5 products?" in client.get(edit).content.decode()
    response = client.post(edit, {"question": "top 3 products?", "expected_answer": "Laptop", "metadata": '{"k": 1}'})
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.question, item.expected_sql, item.expected_answer, item.metadata) == (
        "top 3 products?",
        "",
        "Laptop",
        {"k": 1},
    )
    response = client.post(edit, {"question": "x" * 4001})
    assert response.status_code == 400 and "longer than 4000 characters" in response.content.decode()

    assert client.post(reverse("evals:item_delete", args=[shop.pk, item.pk])).status_code == 302
    assert not shop.items.filter(pk=item.pk).exists()
    assert client.post(reverse("evals:item_delete", args=[shop.pk, item.pk])).status_code == 404
    other = dataset("other")
    assert client.get(reverse("evals:item", args=[other.pk, shop.items.first().pk])).status_code == 404


def test_the_forms_need_their_csrf_token(client):
    shop = dataset()
    checked = type(client)(enforce_csrf_checks=True)
    assert checked.post(reverse("evals:datasets"), {"name": "mine"}).status_code == 403
    assert checked.post(reverse("evals:item_add", args=[shop.pk]), {"question": "q"}).status_code == 403
    page = checked.get(reverse("evals:dataset", args=[shop.pk])).content.decode()
    assert page.count("csrfmiddlewaretoken") == 3  # run, add an item, import


def test_a_question_with_markup_is_shown_as_text(client):
    shop = dataset(items=[Item('<script>alert("x")</script> how many users?')])
    page = client.get(reverse("evals:dataset", args=[shop.pk])).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; how many users?" in page


def test_the_dataset_page_lists_its_experiments_and_the_latest_ones_progress(client):
    shop = dataset()
    experiment(
        shop,
        "earlier",
        passed=[True, True, None],
        status=Experiment.Status.FINISHED,
        summary={"execution_accuracy": 1.0},
    )
    latest = experiment(shop, "latest", passed=[True])
    page = client.get(reverse("evals:dataset", args=[shop.pk])).content.decode()
    assert f'href="/experiments/{latest.pk}/"' in page and "100.0%" in page
    assert f'data-url="/experiments/{latest.pk}/progress.json"' in page and 'data-status="running"' in page
    assert "<span data-progress-done>1</span> of <span data-progress-total>3</span>" in page

    progress = client.get(reverse("evals:experiment_progress", args=[latest.pk])).json()
    first = shop.items.order_by("id").first()
    assert progress == {
        "status": "running",
        "done": 1,
        "total": 3,
        "passed": 1,
        "judged": 1,
        "execution_accuracy": None,
        "results": [{"item": first.pk, "verdict": "passed", "trace_url": None}],
    }


def test_the_run_form_refuses_a_model_not_allowed_and_a_concurrency_out_of_range(client, settings):
    settings.TRACE_ALLOWED_MODELS = ["gpt-4o-mini"]
    shop = dataset()
    run = reverse("evals:experiment_run", args=[shop.pk])
    response = client.post(run, {"model": "gpt-5-huge", "concurrency": "4"})
    assert response.status_code == 400 and 'data-field-error="model"' in response.content.decode()
    response = client.post(run, {"model": "builtin", "concurrency": "9"})
    assert response.status_code == 400 and 'data-field-error="concurrency"' in response.content.decode()
    empty = dataset("empty", items=[])
    response = client.post(reverse("evals:experiment_run", args=[empty.pk]), {"model": "builtin", "concurrency": "1"})
    assert response.status_code == 400 and "The dataset has no items to run." in response.content.decode()
    assert not Experiment.objects.exists()
    page = client.get(reverse("evals:dataset", args=[shop.pk])).content.decode()
    assert '<option value="gpt-4o-mini"' in page and '<option value="builtin"' in page


@pytest.fixture
def people(django_user_model, settings):
    settings.TRACE_REQUIRE_AUTH = True
    return {
        "olga": django_user_model.objects.create_user("olga", password="pw-olga-123"),
        "omar": django_user_model.objects.create_user("omar", password="pw-omar-123"),
        "sam": django_user_model.objects.create_user("sam", password="pw-sam-123", is_staff=True),
    }


def test_with_auth_on_another_users_dataset_is_not_found(client, people):
    olgas = dataset("olga's", owner=people["olga"])
    run = experiment(olgas, owner=people["olga"], passed=[True])
    omars = dataset("omar's", owner=people["omar"])
    client.force_login(people["omar"])
    listed = client.get(reverse("evals:datasets")).content.decode()
    assert "omar&#x27;s" in listed and "olga&#x27;s" not in listed
    item = olgas.items.first()
    for url in (
        reverse("evals:dataset", args=[olgas.pk]),
        reverse("evals:item", args=[olgas.pk, item.pk]),
        reverse("evals:experiment_progress", args=[run.pk]),
    ):
        assert client.get(url).status_code == 404, url
    for url, data in (
        (reverse("evals:item_add", args=[olgas.pk]), {"question": "mine now?"}),
        (reverse("evals:item_delete", args=[olgas.pk, item.pk]), {}),
        (reverse("evals:dataset_import", args=[olgas.pk]), {"file": upload("a.jsonl", '{"question": "q"}\n')}),
        (reverse("evals:experiment_run", args=[olgas.pk]), {"model": "builtin", "concurrency": "1"}),
    ):
        assert client.post(url, data).status_code == 404, url
    assert olgas.items.count() == len(QUESTIONS) and Experiment.objects.count() == 1
    assert client.get(reverse("evals:dataset", args=[omars.pk])).status_code == 200

    # A dataset is made in the name of its user, and another user's name is free.
    assert client.post(reverse("evals:datasets"), {"name": "olga's"}).status_code == 302
    assert Dataset.objects.get(name="olga's", owner=people["omar"])

    client.force_login(people["sam"])  # staff see every dataset, and its experiments
    assert client.get(reverse("evals:dataset", args=[olgas.pk])).status_code == 200
    assert client.get(reverse("evals:experiment_progress", args=[run.pk])).status_code == 200

    client.logout()
    assert client.get(reverse("evals:datasets")).status_code == 302  # to the login page


def test_with_auth_on_a_dataset_nobody_owns_is_seen_when_shared_and_changed_by_staff_only(client, people, settings):
    shop = dataset()
    client.force_login(people["olga"])
    assert client.get(reverse("evals:dataset", args=[shop.pk])).status_code == 404
    settings.TRACE_SHARE_UNOWNED = True
    page = client.get(reverse("evals:dataset", args=[shop.pk])).content.decode()
    assert "data-run-form" in page and "data-add-item-form" not in page  # seen and run, not changed
    assert client.post(reverse("evals:item_add", args=[shop.pk]), {"question": "q"}).status_code == 404
    client.force_login(people["sam"])
    assert client.post(reverse("evals:item_add", args=[shop.pk]), {"question": "q"}).status_code == 302
