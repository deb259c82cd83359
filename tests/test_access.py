"""One rule decides who may see and who may cancel a trace; the query form agrees with it."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import AnonymousUser

from tests.factories import make_trace
from traces import access, protocol
from traces.access import SessionKey
from traces.models import Trace

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(django_user_model):
    return {
        "anonymous": AnonymousUser(),
        "nobody": None,
        "owner": django_user_model.objects.create_user("olga"),
        "other": django_user_model.objects.create_user("omar"),
        "staff": django_user_model.objects.create_user("sam", is_staff=True),
    }


@pytest.mark.parametrize("auth", [True, False])
def test_the_rule_and_its_query_agree_for_everyone(settings, people, auth):
    settings.TRACE_REQUIRE_AUTH = auth
    traces = {"owned": make_trace("owned", owner=people["owner"]), "unowned": make_trace("unowned")}
    for (who, user), (name, trace) in itertools.product(people.items(), traces.items()):
        in_query = Trace.objects.visible_to(user).filter(pk=trace.pk).exists()
        assert access.can_view(user, trace.owner_id) == in_query, (who, name)


def test_with_auth_on_users_see_their_own_staff_see_all_and_anonymous_nothing(settings, people):
    settings.TRACE_REQUIRE_AUTH = True
    owner_id = people["owner"].pk
    assert access.can_view(people["owner"], owner_id) and access.can_view(people["staff"], owner_id)
    assert not access.can_view(people["other"], owner_id) and not access.can_view(people["anonymous"], owner_id)
    # An ownerless trace (runagent without --user): staff only, unless shared with every user.
    assert access.can_view(people["staff"], None)
    assert not any(access.can_view(people[who], None) for who in ("anonymous", "nobody", "owner", "other"))
    settings.TRACE_SHARE_UNOWNED = True
    assert access.can_view(people["owner"], None) and access.can_view(people["other"], None)
    assert not access.can_view(people["anonymous"], None) and not access.can_view(people["nobody"], None)


@pytest.mark.parametrize("share", [True, False])
def test_the_rule_and_its_query_agree_with_unowned_traces_shared_or_not(settings, people, share):
    settings.TRACE_REQUIRE_AUTH = True
    settings.TRACE_SHARE_UNOWNED = share
    traces = {"owned": make_trace("owned", owner=people["owner"]), "unowned": make_trace("unowned")}
    for (who, user), (name, trace) in itertools.product(people.items(), traces.items()):
        in_query = Trace.objects.visible_to(user).filter(pk=trace.pk).exists()
        assert access.can_view(user, trace.owner_id) == in_query, (who, name)


def test_with_auth_on_only_the_owner_and_staff_may_cancel(settings, people):
    settings.TRACE_REQUIRE_AUTH = True
    owner_id = people["owner"].pk
    assert access.can_cancel(people["owner"], owner_id) and access.can_cancel(people["staff"], owner_id)
    assert not access.can_cancel(people["other"], owner_id) and not access.can_cancel(people["anonymous"], None)
    settings.TRACE_REQUIRE_AUTH = False
    assert all(access.can_cancel(user, owner_id) for user in people.values())


def test_a_session_belongs_to_its_owner_only_when_auth_is_on(settings):
    settings.TRACE_REQUIRE_AUTH = True
    mine, theirs = SessionKey.of("tab", 1), SessionKey.of("tab", 2)
    assert mine != theirs and mine.group != theirs.group
    assert mine.group == protocol.session_group("tab", 1, namespaced=True)
    unowned = SessionKey.of("u1.tab", None)  # runagent --session u1.tab without --user
    assert unowned.group not in (mine.group, SessionKey.of("tab", None).group)
    settings.TRACE_REQUIRE_AUTH = False
    assert SessionKey.of("tab", 1) == SessionKey.of("tab", 2) == SessionKey("tab")


def test_a_session_finds_its_own_traces(people, settings):
    settings.TRACE_REQUIRE_AUTH = True
    make_trace("mine", session_id="tab", owner=people["owner"])
    make_trace("same tab name, other user", session_id="tab", owner=people["other"])
    found = Trace.objects.filter(SessionKey.of("tab", people["owner"].pk).filter())
    assert [t.request for t in found] == ["mine"]
    make_trace("nobody's", session_id="tab")
    found = Trace.objects.filter(SessionKey.of("tab", None).filter())
    assert [t.request for t in found] == ["nobody's"]
