"""API tokens: issued once, stored hashed, revocable from the command line and the admin."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from traces.models import ApiToken

pytestmark = pytest.mark.django_db


def test_it_issues_a_token_that_is_stored_hashed(django_user_model):
    user = django_user_model.objects.create_user("gina")
    out = io.StringIO()
    call_command("apitoken", "create", "gina", "--name", "dashboard", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get()
    assert key.startswith("ts_") and key not in (token.key_hash, token.key_prefix)
    assert token.key_hash == ApiToken.hash(key)
    assert ApiToken.authenticate(key) == user
    assert ApiToken.authenticate(key + "x") is None
    listing = io.StringIO()
    call_command("apitoken", "list", stdout=listing)
    assert "gina" in listing.getvalue() and key not in listing.getvalue()

    call_command("apitoken", "revoke", key[:10], stdout=io.StringIO())
    assert ApiToken.authenticate(key) is None
    with pytest.raises(CommandError, match="no active token"):
        call_command("apitoken", "revoke", key[:10])
    with pytest.raises(CommandError, match="no user named"):
        call_command("apitoken", "create", "nobody")


def test_the_admin_shows_a_new_key_once_and_revokes(staff_client, staff_user):
    response = staff_client.post(
        reverse("admin:traces_apitoken_add"), {"user": staff_user.pk, "name": "ci"}, follow=True
    )
    body = response.content.decode()
    token = ApiToken.objects.get()
    key = body.split("Token for alice: ")[1].split(" ")[0]
    assert ApiToken.authenticate(key) == staff_user
    staff_client.post(reverse("admin:traces_apitoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]})
    assert ApiToken.authenticate(key) is None


def test_last_used_is_kept_to_the_minute_without_a_write_per_request(django_user_model, django_assert_num_queries):
    user = django_user_model.objects.create_user("hugo")
    token, key = ApiToken.issue(user, "exporter")
    assert ApiToken.authenticate(key) == user
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    with django_assert_num_queries(1):  # the lookup only: an exporter sends several requests a second
        assert ApiToken.authenticate(key) == user
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - ApiToken.LAST_USED_EVERY)
    with django_assert_num_queries(2):
        assert ApiToken.authenticate(key) == user
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first - ApiToken.LAST_USED_EVERY
    token.revoked_at = first
    token.save()
    assert ApiToken.authenticate(key) is None  # revoked: refused at once, however recently used
