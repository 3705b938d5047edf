from nameko.standalone.rpc import ServiceRpcProxy

from services.presets.service import PresetsService


def test_presets_service_lists_seeded_example(container_factory, settings):
    container = container_factory(PresetsService, settings.nameko_config())
    container.start()
    with ServiceRpcProxy("presets", {"AMQP_URI": settings.amqp_uri}) as presets:
        names = [p["slug"] for p in presets.list()]
    assert names == ["example_01"]
