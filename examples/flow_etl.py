"""A small ETL as a flow: run it with ``python examples/flow_etl.py``.

The script starts its own HTTP server on the loopback interface. The server hands out a
generated JSON export of 50 customer payments, but answers ``500`` to the first two
requests, the way a service that is still warming up might. The flow then

1. fetches the export, retrying HTTP and connection errors with a short backoff;
2. decodes the JSON into a list of records;
3. checks and normalises every record as its own task on a thread pool (``|=>``);
4. writes the accepted records to two sinks at once: a JSON Lines file and a SQLite
   table, both in a temporary directory (``||``);
5. compares what the two sinks wrote and reports.

It prints the flow run's summary and a one-line report, and exits with 0 when the run
succeeded. Nothing is left behind: the server is shut down and the directory removed.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from event_pipeline import EventBase, EventExecutionEvaluationState, RetryPolicy, Runner
from event_pipeline.flow import Flow

RECORDS = 50
FAILING_REQUESTS = 2
CURRENCIES = ("EUR", "GBP", "USD")

# -- the flow, in the text form -----------------------------------------------------------
# The same flow in Python would be
#     step(Fetch).then(pipe(Parse), each(Validate),
#                      pipe(parallel(WriteJsonLines, WriteSqlite)), pipe(Report))
# and Flow.parse(FLOW_TEXT, ...) == that expression.
FLOW_TEXT = """
Fetch                               # GET the export; retried on HTTP and URL errors
  |-> Parse                         # the response body -> a list of records
  |=> Validate                      # one task per record, on a thread pool
  |-> WriteJsonLines || WriteSqlite # both sinks receive the same list, at the same time
  |-> Report                        # receives the two sinks' results as a tuple
"""


# -- events ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rejected:
    """What Validate returns, as a failed task, for a record it will not pass on."""

    id: int
    problem: str


class Fetch(EventBase):
    """Download the export. A 500 raises HTTPError, a refused connection URLError."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 1}
    retry_policy = RetryPolicy(
        max_attempts=4,
        backoff_factor=0.05,
        max_backoff=0.5,
        retry_on_exceptions=[urllib.error.HTTPError, urllib.error.URLError],
    )

    def process(self, url: str) -> tuple[bool, Any]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return True, response.read()
        except urllib.error.HTTPError as error:
            error.close()  # an HTTPError holds the response open; the retry will not need it
            raise


class Parse(EventBase):
    """Decode the body; the export is an object with a "payments" list."""

    def process(self, body: bytes) -> tuple[bool, Any]:
        document = json.loads(body)
        return True, document["payments"]


class Validate(EventBase):
    """Check one record and normalise it; a bad record is a failed task, not a crash.

    The event succeeds when at least one record passes, so a few bad rows do not stop
    the load, but an export in which every row is bad does.
    """

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 8}
    execution_evaluation_state = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS

    def process(self, record: dict[str, Any]) -> tuple[bool, Any]:
        if "@" not in record.get("email", ""):
            return False, Rejected(record["id"], "no valid e-mail address")
        if record["amount_cents"] <= 0:
            return False, Rejected(record["id"], "amount is not positive")
        if record["currency"] not in CURRENCIES:
            return False, Rejected(record["id"], f"unknown currency {record['currency']!r}")
        return True, {
            "id": record["id"],
            "email": record["email"].strip().lower(),
            "amount": record["amount_cents"] / 100,
            "currency": record["currency"],
        }


def accepted(rows: list[Any]) -> list[dict[str, Any]]:
    """The rows Validate passed on (its value holds the rejections too, in input order)."""
    return [row for row in rows if not isinstance(row, Rejected)]


class WriteJsonLines(EventBase):
    """Sink one: a JSON Lines file in the output directory."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, rows: list[Any], out_dir: str) -> tuple[bool, Any]:
        path = Path(out_dir) / "payments.jsonl"
        good = accepted(rows)
        with path.open("w", encoding="utf-8") as file:
            for row in good:
                file.write(json.dumps(row) + "\n")
        return True, {"sink": path.name, "written": len(good), "rejected": len(rows) - len(good)}


class WriteSqlite(EventBase):
    """Sink two: a SQLite table (its own connection, in the worker thread that writes)."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, rows: list[Any], db_path: str) -> tuple[bool, Any]:
        good = accepted(rows)
        with sqlite3.connect(db_path) as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS payments "
                "(id INTEGER PRIMARY KEY, email TEXT, amount REAL, currency TEXT)"
            )
            connection.executemany(
                "INSERT INTO payments VALUES (:id, :email, :amount, :currency)", good
            )
            (count,) = connection.execute("SELECT COUNT(*) FROM payments").fetchone()
        connection.close()
        return True, {"sink": Path(db_path).name, "written": count}


class Report(EventBase):
    """Check that both sinks hold the same rows and sum up the load."""

    def process(self, sinks: tuple[dict[str, Any], dict[str, Any]]) -> tuple[bool, Any]:
        lines, table = sinks
        agree = lines["written"] == table["written"]
        return agree, {
            "loaded": table["written"],
            "rejected": lines["rejected"],
            "sinks": [lines["sink"], table["sink"]],
            "agree": agree,
        }


# -- a test server ----------------------------------------------------------------------------
def make_export(count: int, seed: int = 7) -> bytes:
    """A reproducible export of ``count`` payments, three of them broken on purpose."""
    rng = random.Random(seed)
    payments = []
    for number in range(1, count + 1):
        payments.append(
            {
                "id": number,
                "email": f" Customer{number}@Example.org ",
                "amount_cents": rng.randint(100, 50_000),
                "currency": rng.choice(CURRENCIES),
            }
        )
    payments[4]["email"] = "nobody"  # no '@'
    payments[17]["amount_cents"] = -250  # a refund that slipped into the payments
    payments[31]["currency"] = "XTS"  # the ISO code reserved for testing
    return json.dumps({"payments": payments}).encode()


class ExportHandler(BaseHTTPRequestHandler):
    """Serves the export at /payments.json, failing the first few requests with 500."""

    body = b""
    failures_left = 0
    lock = threading.Lock()
    log: list[int] = []

    def do_GET(self) -> None:  # the name http.server calls
        cls = type(self)
        with cls.lock:
            failing = cls.failures_left > 0
            cls.failures_left -= failing
        if self.path != "/payments.json":
            status, body = 404, b"not found"
        elif failing:
            status, body = 500, b"warming up, try again"
        else:
            status, body = 200, cls.body
        cls.log.append(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the console for the flow's own output."""


def start_server() -> ThreadingHTTPServer:
    ExportHandler.body = make_export(RECORDS)
    ExportHandler.failures_left = FAILING_REQUESTS
    ExportHandler.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ExportHandler)
    threading.Thread(target=server.serve_forever, name="export-server", daemon=True).start()
    return server


# -- main -------------------------------------------------------------------------------------
def main() -> int:
    flow = Flow.parse(FLOW_TEXT, [Fetch, Parse, Validate, WriteJsonLines, WriteSqlite, Report])
    print(f"flow: {flow}")
    server = start_server()
    url = f"http://127.0.0.1:{server.server_port}/payments.json"
    try:
        with tempfile.TemporaryDirectory() as out_dir, Runner() as runner:
            # The URL goes to the entry step (Fetch); named inputs go to every step
            # that declares a parameter of that name.
            run = runner.run(flow, url, out_dir=out_dir, db_path=str(Path(out_dir) / "payments.db"))
    finally:
        server.shutdown()
        server.server_close()

    print(run.summary())
    statuses = ", ".join(str(status) for status in ExportHandler.log)
    print(f"server answered: {statuses}")
    if not run.success:
        print(f"flow failed: {[step.name for step in run.failed]}")
        return 1
    report = run.output
    rejected = [row for row in run["Validate"].value if isinstance(row, Rejected)]
    print(
        f"report: {report['loaded']} of {RECORDS} payments loaded into "
        f"{' and '.join(report['sinks'])} after {run['Fetch'].attempts} fetch attempts; "
        f"{report['rejected']} rejected ({', '.join(f'#{r.id}: {r.problem}' for r in rejected)}); "
        f"{run.duration:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
