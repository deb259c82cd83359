"""The forms of the dataset pages: a new dataset (and a file of items for it), a file of items for
an existing one, an item, and an experiment to run. Items are checked by ``evals.datasets``'
rules (``item_of``), the same as a file's lines; a file is imported whole or not at all."""

from __future__ import annotations

import io
import json
from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

from agents.config import allowed_models, model_label
from evals.datasets import FIELDS, BadItems, Item, item_of, parse_items
from evals.models import Dataset
from traces import protocol

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_CONCURRENCY = 8


def items_of_upload(upload: UploadedFile) -> list[Item]:
    """The items of an uploaded JSONL or CSV file, or ValidationError listing every bad line."""
    if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
        raise forms.ValidationError(f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB.")
    upload.seek(0)
    text = io.TextIOWrapper(upload, encoding="utf-8", newline="")
    try:
        items = parse_items(upload.name or "upload", text)
    except BadItems as bad:
        raise forms.ValidationError(
            [f"{problem}" for problem in bad.problems] + ["Nothing was imported: correct the file and import it again."]
        ) from None
    finally:
        text.detach()  # the upload closes its own file
    if not items:
        raise forms.ValidationError("The file holds no items.")
    return items


class ImportForm(forms.Form):
    file = forms.FileField(
        label="Items file", help_text="JSONL, or CSV with a header: question, expected_sql, expected_answer, metadata."
    )

    def clean_file(self) -> list[Item]:
        return items_of_upload(self.cleaned_data["file"])


class DatasetForm(forms.Form):
    """A new dataset, named uniquely among its owner's, with the items of a file if one is given."""

    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(
        required=False,
        label="Items file (optional)",
        help_text="JSONL, or CSV with a header: question, expected_sql, expected_answer, metadata.",
    )

    def __init__(self, *args: Any, owner_id: int | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner_id = owner_id

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Dataset.objects.named(name, self.owner_id).exists():
            raise forms.ValidationError("You already have a dataset of that name.")
        return name

    def clean_file(self) -> list[Item]:
        upload = self.cleaned_data.get("file")
        return items_of_upload(upload) if upload else []


class ItemForm(forms.Form):
    question = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 2}))
    expected_sql = forms.CharField(
        required=False, strip=False, label="Expected SQL", widget=forms.Textarea(attrs={"rows": 3})
    )
    expected_answer = forms.CharField(required=False, strip=False, label="Expected answer")
    metadata = forms.CharField(
        required=False, strip=False, label="Metadata (a JSON object)", widget=forms.Textarea(attrs={"rows": 1})
    )

    @classmethod
    def of(cls, question: str, expected_sql: str, expected_answer: str, metadata: dict) -> ItemForm:
        return cls(
            initial={
                "question": question,
                "expected_sql": expected_sql,
                "expected_answer": expected_answer,
                "metadata": json.dumps(metadata, ensure_ascii=False) if metadata else "",
            }
        )

    def clean(self) -> dict[str, Any]:
        data = self.cleaned_data
        try:
            self.item = item_of({name: data.get(name, "") for name in FIELDS})
        except ValueError as exc:
            message = str(exc)
            # item_of names the field it refuses as 'name': the error goes beside that field.
            field = next((name for name in FIELDS if f"'{name}'" in message), None)
            self.add_error(field, message)
        return data


class RunForm(forms.Form):
    """An experiment: a dataset's items through the agent with one configuration."""

    name = forms.CharField(
        max_length=200, required=False, help_text="Default: the dataset's name and the time.", label="Name"
    )
    model = forms.ChoiceField(choices=[])
    max_steps = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=protocol.MAX_STEPS_LIMIT,
        label="Max steps",
        help_text="Default: the agent's.",
    )
    concurrency = forms.IntegerField(min_value=1, max_value=MAX_CONCURRENCY, initial=4, help_text="Items run at once.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        models = allowed_models()
        model = self.fields["model"]
        assert isinstance(model, forms.ChoiceField)
        model.choices = [(name, name) for name in models]
        model.initial = model_label() if model_label() in models else models[0]
