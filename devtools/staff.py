"""Staff users of the web pages, written straight into the `web` schema: the demo users of
`branchline up`, `branchline users add`, and the benches' users."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from shared.service.db import make_engine
from web.users import save_user


async def save_users(database_url: str, wanted: dict[str, tuple[str, str | None, str | None,
                                                                 str | None]]) -> None:
    """Create or change staff users: name → (role, site, driver, password or None)."""
    engine = make_engine(database_url, pool_size=1)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            for name, (role, site, driver, password) in wanted.items():
                await save_user(session, username=name, role=role, password=password,
                                site=site, driver=driver)
    finally:
        await engine.dispose()
