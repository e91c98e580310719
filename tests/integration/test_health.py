"""/health answers while the process lives; /ready names the dependency that is down."""

import httpx

from api.main import create_app
from shared.settings import Settings


async def test_health_and_ready_answer_ok_when_everything_is_up(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    ready = await client.get("/ready")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_ready_names_each_unreachable_dependency(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "database_url": "postgresql+asyncpg://postgres@127.0.0.1:1/none",
            "amqp_url": "amqp://guest:guest@127.0.0.1:1/",
        }
    )
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            ready = await client.get("/ready")
            health = await client.get("/health")

    assert ready.status_code == 503
    assert ready.json() == {"detail": "unavailable: database, broker"}
    assert health.status_code == 200
