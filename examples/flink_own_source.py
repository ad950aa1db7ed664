"""The streamlstm Flink function between your own source and sink (Kafka, ...), see docs/flink.md.

``build_model_pipeline(env, lines, None, model)`` takes any PyFlink ``DataStream`` of text
lines ``key,time,x1..xn[,y]`` and returns the ``DataStream`` of ``key,time,prediction[,error]``
lines: keying, per-key state in Flink, checkpoints and rescaling come with it; source and
sink are yours.

Local demo (run it from the Flink venv, .ci/flink-setup.sh): the source is a collection of
lines read from a CSV file (standing in for yours), the output is collected back here and
printed::

    /work/venv-flink/bin/python examples/flink_own_source.py                  # made-up model and events
    /work/venv-flink/bin/python examples/flink_own_source.py --model model.slstm --events events.csv

With Kafka (needs the Kafka connector jar matching Flink 2.x, e.g.
flink-sql-connector-kafka-4.0.0-2.0.jar from Maven Central, and a Kafka broker)::

    /work/venv-flink/bin/python examples/flink_own_source.py --model model.slstm \\
        --kafka-jar flink-sql-connector-kafka.jar --bootstrap-servers broker:9092 \\
        --in-topic events --out-topic predictions --checkpoint-dir /data/ckpt --savepoint-dir /data/sp

The Kafka mode is written against PyFlink's Kafka connector API but was not run here (no
broker on the test machine); the demo mode is tested (tests/flink/test_flink_production.py).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile


def demo_files(work: str) -> tuple[str, str]:
    """A small trained model and an event file for 5 sensors."""
    from streamlstm import OnlineLSTM

    rng = random.Random(0)
    model = OnlineLSTM(n_inputs=2, hidden=8, lr=1e-2, seed=0)
    prev = 0.0
    for _ in range(500):
        x1 = rng.uniform(-1, 1)
        model.learn_one([x1, prev], 0.6 * prev + 0.3 * x1)
        prev = x1
    model_path = os.path.join(work, "model.slstm")
    model.save(model_path)
    events = os.path.join(work, "events.csv")
    with open(events, "w") as f:
        for t in range(100):
            for s in range(5):
                f.write(f"sensor-{s},{t},{rng.uniform(-1, 1)!r},{rng.uniform(-1, 1)!r},{rng.uniform(-1, 1)!r}\n")
    return model_path, events


def run_collection(model_path: str, events_path: str, parallelism: int) -> list[str]:
    """Lines from a collection in, the model's output lines collected back."""
    from pyflink.common import Types

    from streamlstm.adapters.flink import build_model_pipeline, make_env, prepare_worker_environment

    prepare_worker_environment(work_dir=tempfile.mkdtemp(prefix="streamlstm-flink-own-source-"))
    env = make_env(parallelism=parallelism)
    with open(events_path) as f:
        lines = env.from_collection([line.rstrip("\n") for line in f if line.strip()], type_info=Types.STRING())
    predictions = build_model_pipeline(env, lines, None, os.path.abspath(model_path))
    with predictions.execute_and_collect("streamlstm-own-source") as results:
        return list(results)


def run_kafka(a) -> None:
    """KafkaSource -> streamlstm -> KafkaSink (exactly once: Kafka transactions commit at
    checkpoints). SIGTERM stops the job with a savepoint in --savepoint-dir."""
    from pyflink.common import WatermarkStrategy
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )

    from streamlstm.adapters.flink import build_model_pipeline, make_env, prepare_worker_environment, run_until_stopped

    prepare_worker_environment()
    env = make_env(parallelism=a.parallelism, checkpoint_interval_ms=a.checkpoint_interval,
                   checkpoint_dir=a.checkpoint_dir, savepoint_dir=a.savepoint_dir, resume_from=a.resume_from)
    env.add_jars("file://" + os.path.abspath(a.kafka_jar))
    source = (KafkaSource.builder().set_bootstrap_servers(a.bootstrap_servers).set_topics(a.in_topic)
              .set_group_id(a.group_id).set_starting_offsets(KafkaOffsetsInitializer.earliest())
              .set_value_only_deserializer(SimpleStringSchema()).build())
    # the source has the uid build_model_pipeline would give a file source: savepoints stay compatible
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "streamlstm-source").uid("streamlstm-source")
    predictions = build_model_pipeline(env, lines, None, os.path.abspath(a.model), learn=a.learn)
    sink = (KafkaSink.builder().set_bootstrap_servers(a.bootstrap_servers)
            .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(a.out_topic)
                                   .set_value_serialization_schema(SimpleStringSchema()).build())
            .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix("streamlstm").build())
    predictions.sink_to(sink).name("streamlstm-sink").uid("streamlstm-sink")
    run_until_stopped(env, "streamlstm-kafka", a.savepoint_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model file (OnlineLSTM.save); default: a made-up demo model")
    ap.add_argument("--events", help="demo: CSV lines to feed as a collection; default: made-up events")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--learn", action="store_true", help="per-key learning models")
    ap.add_argument("--kafka-jar", help="Kafka mode: the Flink Kafka connector jar")
    ap.add_argument("--bootstrap-servers", default="localhost:9092")
    ap.add_argument("--in-topic", default="events")
    ap.add_argument("--out-topic", default="predictions")
    ap.add_argument("--group-id", default="streamlstm")
    ap.add_argument("--checkpoint-interval", type=int, default=10_000, metavar="MS")
    ap.add_argument("--checkpoint-dir")
    ap.add_argument("--savepoint-dir", default=os.path.join(tempfile.gettempdir(), "streamlstm-savepoints"))
    ap.add_argument("--resume-from")
    a = ap.parse_args(argv)
    if a.kafka_jar:
        if not a.model:
            ap.error("--kafka-jar needs --model")
        run_kafka(a)
        return 0
    model_path, events = a.model, a.events
    if model_path is None or events is None:
        made_model, made_events = demo_files(tempfile.mkdtemp(prefix="streamlstm-flink-own-source-"))
        model_path, events = model_path or made_model, events or made_events
    for line in run_collection(model_path, events, a.parallelism):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
