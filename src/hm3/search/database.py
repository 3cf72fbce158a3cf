"""A ``--storage`` database URL as hm3 opens it and shows it: the driver named, no password.

SQLAlchemy picks a driver from the URL's scheme; from 2.1 a bare ``postgresql://`` means
psycopg 3, while ``hm3[search]`` installs psycopg2, so the bare form names psycopg2 here. An
in-memory SQLite database is refused: no worker could share it and no run resume it. This
module opens nothing (:mod:`hm3.search.study` does).
"""

from __future__ import annotations

from hm3.errors import Hm3Error

_POSTGRES = ("postgresql", "postgres")
_GONE = ("OperationalError", "InterfaceError", "DisconnectionError")  # sqlalchemy.exc


def database_url(url: str) -> str:
    """``url`` to open: ``postgresql://`` (or ``postgres://``) becomes ``postgresql+psycopg2://``.

    Raises:
        Hm3Error: an in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``).
    """
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite" and rest.strip("/") in ("", ":memory:"):
        raise Hm3Error(f"--storage {shown(url)}: an in-memory database dies with the process, "
                       "so no worker could share it and no run resume it; give a file "
                       "(sqlite:///search.db) or leave --storage out")  # fmt: skip
    return f"postgresql+psycopg2://{rest}" if scheme in _POSTGRES else url


def shown(url: str) -> str:
    """``url`` for a message: whatever precedes ``@`` (user, password) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}{sep}***@{host}" if at else url


def open_fix(url: str) -> str:
    """What to check when the database cannot be opened, by the URL's scheme."""
    scheme = url.partition(":")[0].split("+")[0]
    if scheme == "sqlite":
        return "check the URL and that the database file's folder exists and may be written"
    driver = (
        "psycopg2: pip install 'hm3[search]'" if scheme in _POSTGRES else "its SQLAlchemy driver"
    )
    return f"check the URL, that the server runs and that {driver} is installed"


def lost(exc: BaseException, url: str) -> Hm3Error | None:
    """The one-line error for a database that went away mid-search (the server stopped, the
    network cut), when ``exc`` or an exception behind it is SQLAlchemy's connection error
    (not, say, a constraint that failed: that stays a bug); else ``None``.
    Optuna may surface it as one of its own errors, or a bug of its own (``UnboundLocalError``)
    raised while handling it."""
    seen: BaseException | None = exc
    while seen is not None:
        kind = type(seen)
        if kind.__module__.startswith("sqlalchemy") and kind.__name__ in _GONE:
            detail = (str(seen).strip().splitlines() or [type(seen).__name__])[0][:200]
            return Hm3Error(
                f"--storage {shown(url)}: the database went away mid-search ({detail}); the "
                "trials finished are kept in it: rerun the same command once it is back"
            )
        seen = seen.__cause__ or seen.__context__
    return None
