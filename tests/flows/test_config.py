"""Flow settings: the YAML file, the environment over it, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_fixtures import assert_problems_match

from cityvitals.yamlconf import ConfigError
from flows.config import FlowConfig, load_flow_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def test_the_documented_example_file_loads_as_written():
    config = load_flow_config({"CITYVITALS_CONFIG": str(ROOT / "config/kafka.example.yaml")})
    assert config.kafka.client == {"client.id": "cityvitals-district-7"}
    assert config.kafka.topics.breaches == "city.breaches"
    assert config.kafka.topics.indicators is None
    assert config.pipeline.shards is None  # one per worker, settled at the start


def test_the_environment_wins_over_the_file_and_keeps_the_rest(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text("kafka:\n  bootstrap_servers: kafka-1:9092\n  max_poll: 500\n")
    config = load_flow_config(
        {
            "CITYVITALS_CONFIG": str(path),
            "KAFKA_BOOTSTRAP_SERVERS": "kafka-2:9092",
            "CITYVITALS__KAFKA__STOP_AT_END": "true",
            "CITYVITALS__KAFKA__CLIENT__CLIENT_ID": "district-7",
            "CITYVITALS__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "CITYVITALS__KAFKA__SASL_MECHANISM": "PLAIN",
            "CITYVITALS__KAFKA__SASL_USERNAME": "cv",
            "CITYVITALS__KAFKA__SASL_PASSWORD": "12345",
            "CITYVITALS__PIPELINE__ALLOWED_LATENESS": "1m",
        }
    )
    assert config.kafka.bootstrap_servers == "kafka-2:9092"
    assert config.kafka.max_poll == 500  # from the file
    assert config.kafka.stop_at_end is True
    assert config.kafka.client == {"client.id": "district-7"}
    librdkafka = config.kafka.client_config()
    assert librdkafka["security.protocol"] == "SASL_SSL"
    assert librdkafka["sasl.password"] == "12345"  # a password that looks like a number is text
    assert config.pipeline.allowed_lateness.total_seconds() == 60
    assert config.kafka.client_config()["bootstrap.servers"] == "kafka-2:9092"


def test_no_file_and_no_variables_give_the_defaults():
    assert load_flow_config({}) == FlowConfig()


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.bad.yaml")), ids=lambda p: p.name)
def test_bad_files_report_every_problem_with_line_and_key(path):
    with pytest.raises(ConfigError) as err:
        load_flow_config({"CITYVITALS_CONFIG": str(path)})
    assert_problems_match(err.value, path)


def test_a_bad_variable_is_named_in_the_error():
    with pytest.raises(ConfigError) as err:
        load_flow_config({"CITYVITALS__KAFKA__TOPICS__BREECHES": "x"})
    assert err.value.problems == [
        "CITYVITALS__KAFKA__TOPICS__BREECHES: kafka.topics.breeches: unknown key"
    ]


def test_a_missing_config_file_is_named():
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read"):
        load_flow_config({"CITYVITALS_CONFIG": "/nowhere.yaml"})


def test_secrets_never_show_in_errors_or_reprs(tmp_path):
    """A bad secret is named by its key only; a good one stays out of repr and summary."""
    bad = FIXTURES / "kafka_security.bad.yaml"
    with pytest.raises(ConfigError) as err:
        load_flow_config({"CITYVITALS_CONFIG": str(bad)})
    assert "hunter2" not in str(err.value)
    assert "True" not in str(err.value)  # ssl_key_password: true is not echoed either

    secret = "pw-" + "7" * 12
    with pytest.raises(ConfigError) as err:
        load_flow_config(
            {
                "CITYVITALS__KAFKA__SASL_USERNAME": "cv",
                "CITYVITALS__KAFKA__SASL_PASSWORD": secret,  # without a SASL protocol
            }
        )
    assert "security_protocol" in str(err.value)
    assert secret not in str(err.value)

    config = load_flow_config(
        {
            "CITYVITALS__KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "CITYVITALS__KAFKA__SASL_USERNAME": "cv",
            "CITYVITALS__KAFKA__SASL_PASSWORD": secret,
            "CITYVITALS__KAFKA__SSL_KEY_PASSWORD": secret,
            "CITYVITALS__KAFKA__CLIENT__SASL_OAUTHBEARER_CLIENT_SECRET": secret,
        }
    )
    assert config.kafka.client_config()["sasl.password"] == secret
    for shown in (repr(config), str(config), repr(config.kafka), str(config.summary())):
        assert secret not in shown


def test_consumer_and_producer_settings_reach_only_their_clients():
    """A consumer's fetch size set in ``client`` would make every producer warn (CONFWARN):
    ``consumer`` and ``producer`` hold such keys, set from the file or the environment."""
    config = load_flow_config(
        {
            "CITYVITALS__KAFKA__CLIENT__CLIENT_ID": "district-7",
            "CITYVITALS__KAFKA__CONSUMER__MAX_PARTITION_FETCH_BYTES": "8388608",
            "CITYVITALS__KAFKA__PRODUCER__LINGER_MS": "50",
            "CITYVITALS__KAFKA__PRODUCER__SASL_OAUTHBEARER_CLIENT_SECRET": "s3cret-x",
        }
    )
    consumer = config.kafka.client_config("consumer")
    producer = config.kafka.client_config("producer")
    admin = config.kafka.client_config()
    assert consumer["max.partition.fetch.bytes"] == 8388608
    assert producer["linger.ms"] == 50
    assert {c["client.id"] for c in (consumer, producer, admin)} == {"district-7"}
    assert "max.partition.fetch.bytes" not in producer and "linger.ms" not in consumer
    assert "max.partition.fetch.bytes" not in admin and "linger.ms" not in admin
    assert "s3cret-x" not in str(config.summary()) and "s3cret-x" not in repr(config.kafka)


def test_publishing_refuses_a_producer_setting_that_loses_order():
    from cityvitals.publish import check_settings
    from flows.config import KafkaConfig

    with pytest.raises(ValueError, match=r"enable\.idempotence=False is not allowed"):
        check_settings(KafkaConfig(producer={"enable.idempotence": False}))
