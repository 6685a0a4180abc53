"""Errors the core raises. Every one carries a message fit for a one-line CLI error."""


class StoreError(Exception):
    """Base class of every error raised by the persistence core."""


class InvalidDatabaseURL(StoreError):
    """The database URL cannot be understood (unknown scheme, missing path...)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached: down, refusing or dropping connections, shutting down,
    out of connections; for SQLite a file that is locked, unreadable or not a database.

    Not a bug and not bad data: the caller may retry later (the agent answers 503). The
    driver's error is the ``__cause__``.
    """


class DatabaseUnavailable(StoreUnavailable):
    """The database could not be connected to, or a connection to it was found broken.

    Kept as its own name (the operator's conditions and the documented messages show it);
    catch :class:`StoreUnavailable` for every way of the database being unreachable.
    """


class StoreQueryError(StoreError):
    """The database refused a statement for another reason than being unreachable (a bug,
    a schema that is not migrated, a constraint the core does not handle). The driver's error
    is the ``__cause__``; the message is the driver's."""


class InvalidOccurrenceId(StoreError):
    """An occurrence id that is empty, too long, reserved or has forbidden characters."""


class UnknownOccurrence(StoreError):
    """An occurrence that is neither registered nor owns any work."""


class NotOwnedError(StoreError):
    """A write aimed at work that belongs to another occurrence (nothing was changed)."""


class OccurrenceError(StoreError):
    """An error about one occurrence, which it names (``occurrence_id``)."""

    def __init__(self, occurrence_id: str, message: str) -> None:
        self.occurrence_id = occurrence_id
        super().__init__(message)


class VersionConflict(OccurrenceError):
    """An optimistic write lost: the row changed since the writer read it (nothing overwritten)."""

    def __init__(self, occurrence_id: str, expected: int, actual: int | None) -> None:
        self.expected, self.actual = expected, actual
        super().__init__(occurrence_id, f"occurrence {occurrence_id!r} changed concurrently: "
                         f"expected version {expected}, found "
                         f"{actual if actual is not None else 'no row'}")


class MigrationError(StoreError):
    """A migration could not be applied, or an applied migration was edited afterwards."""


class InvalidTaskId(StoreError):
    """A task id an ordinary occurrence may not use (the form of a shared decision's id)."""


class NotEligibleToDecide(OccurrenceError):
    """A canary rollout of the agent is under way and this occurrence is not on its stable
    revision: it may not claim a shared decision, only follow one a stable occurrence claimed
    (none has yet)."""

    def __init__(self, occurrence_id: str, revision: str | None, stable_revision: str) -> None:
        self.revision, self.stable_revision = revision, stable_revision
        super().__init__(occurrence_id, f"occurrence {occurrence_id!r} runs revision "
                         f"{revision or 'unknown'}, not the stable {stable_revision} of a rollout "
                         "under way: it follows the shared decisions of the stable occurrences")


class OccurrenceIdConflict(OccurrenceError):
    """An occurrence id is owned by another agent (another AgentDeployment on this database);
    nothing of that agent's was changed."""

    def __init__(self, occurrence_id: str, owner: str, claimant: str,
                 owner_uid: str | None = None) -> None:
        self.owner, self.claimant, self.owner_uid = owner, claimant, owner_uid
        uid = f" (uid {owner_uid})" if owner_uid else ""
        super().__init__(
            occurrence_id,
            f"occurrence id {occurrence_id!r} belongs to agent {owner!r}{uid}, not to "
            f"{claimant!r}: two agents on one database cannot share occurrence ids (rename "
            "one, or `occurrence-store occurrences disown` the ids if the owner is gone for good)"
        )
