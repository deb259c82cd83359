"""Create, list and revoke the API tokens that non-browser clients pass as ?token=."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from traces.models import ApiToken


def revoke(prefix: str) -> int:
    return ApiToken.objects.active().filter(key_prefix__startswith=prefix).update(revoked_at=timezone.now())


class Command(BaseCommand):
    help = "Manage API tokens: create USER [--name], list [USER], revoke PREFIX."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="command", required=True)
        create = sub.add_parser("create", help="Issue a token for a user; the key is printed once.")
        create.add_argument("username", help="The user the token acts as.")
        create.add_argument("--name", default="api", help="What the token is for.")
        listing = sub.add_parser("list", help="List tokens (never their keys).")
        listing.add_argument("username", nargs="?", help="Only this user's tokens.")
        revoking = sub.add_parser("revoke", help="Revoke the token(s) whose key starts with PREFIX.")
        revoking.add_argument("prefix", help="The first characters of the key, as shown by list (at least 6).")

    def handle(self, *args, command: str, **options):
        getattr(self, f"_{command}")(**options)

    def _create(self, username: str, name: str, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        _, key = ApiToken.issue(user, name)
        self.stdout.write(self.style.SUCCESS(f"Token for {username} ({name}); store it now, it is not shown again:"))
        self.stdout.write(key)

    def _list(self, username: str | None = None, **options):
        tokens = ApiToken.objects.select_related("user")
        if username:
            tokens = tokens.filter(user__username=username)
        for token in tokens:
            state = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active"
            used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
            self.stdout.write(
                f"{token.key_prefix}…  {token.user.get_username():<20} {token.name:<20} {state:<18} last used {used}"
            )

    def _revoke(self, prefix: str, **options):
        if len(prefix) < 6:
            raise CommandError("give at least 6 characters of the key")
        count = revoke(prefix)
        if not count:
            raise CommandError(f"no active token starts with {prefix!r}")
        self.stdout.write(self.style.SUCCESS(f"Revoked {count} token(s)."))
