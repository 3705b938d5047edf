"""Idempotency-Key without its table (services/gateway/stores/idempotency.py): the create request id a
keyed request carries, and a gateway run without the store. (With the table: tests/integration/test_idempotency.py.)"""
from services.gateway.stores.idempotency import fingerprint, request_id
from tests.helpers import app_client, assert_json_error, gateway_settings, post_generate


def test_a_keyed_request_has_one_create_request_id_for_all_its_retries():
    body = fingerprint("example_01", {"count": 2})
    assert request_id("gz_a", "key-1", body) == request_id("gz_a", "key-1", body)
    assert request_id("gz_a", "key-1", body) != request_id("gz_b", "key-1", body)
    assert request_id("gz_a", "key-1", body) != request_id("gz_a", "key-2", body)
    assert request_id("gz_a", "key-1", body) != request_id("gz_a", "key-1", fingerprint("example_01", {}))


def test_no_store_means_the_header_is_only_validated(tmp_path):
    client = app_client(gateway_settings(tmp_path))

    def job_ids(key):
        result = post_generate(client, {"count": 2}, headers={"Idempotency-Key": key})
        assert result.status_code == 202, result.text
        return [job["job_id"] for job in result.json["jobs"]]

    assert job_ids("k") != job_ids("k")
    assert_json_error(post_generate(client, {}, headers={"Idempotency-Key": ""}), 400, "Idempotency-Key")
