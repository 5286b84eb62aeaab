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
    assert config.pipeline.shards == 4


def test_the_environment_wins_over_the_file_and_keeps_the_rest(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text("kafka:\n  bootstrap_servers: kafka-1:9092\n  max_poll: 500\n")
    config = load_flow_config(
        {
            "CITYVITALS_CONFIG": str(path),
            "KAFKA_BOOTSTRAP_SERVERS": "kafka-2:9092",
            "CITYVITALS__KAFKA__STOP_AT_END": "true",
            "CITYVITALS__KAFKA__CLIENT__SECURITY_PROTOCOL": "SASL_SSL",
            "CITYVITALS__PIPELINE__ALLOWED_LATENESS": "1m",
        }
    )
    assert config.kafka.bootstrap_servers == "kafka-2:9092"
    assert config.kafka.max_poll == 500  # from the file
    assert config.kafka.stop_at_end is True
    assert config.kafka.client == {"security.protocol": "SASL_SSL"}
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
