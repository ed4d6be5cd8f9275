#!/usr/bin/env python3
"""What SQLite's FTS5 costs per stored message, outside the server (issue 14).

The writer target ("indexing keeps the message writer above 100,000 messages per
second") is measured by `salon bench persist`; this script isolates the index's own share
of it, with the migration's schema (`crates/server/migrations/sqlite/0006_search.sql`)
and variants of it, on one core, with nothing else in the way: no protocol, no sqlx.

It stores ROWS messages of about 64 bytes (words drawn from a Zipf-like distribution, as
`salon bench search` does) in transactions of BATCH rows, WAL and synchronous=FULL as
the server runs, and prints microseconds per row for each variant. Run it on tmpfs to
leave the disk's fsync out (`--dir /dev/shm`).

Needs a SQLite of 3.43 or later for `contentless_delete` (Debian 12's Python has 3.40):
`pip install apsw` brings its own. Usage: python3 scripts/bench/fts5_insert.py [--rows N]
"""

import argparse
import os
import random
import shutil
import tempfile
import time

import apsw

MESSAGES = """CREATE TABLE messages (
    id INTEGER PRIMARY KEY, room_id INTEGER NOT NULL, author_id INTEGER NOT NULL,
    body TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX messages_by_room ON messages (room_id, id);
CREATE INDEX messages_by_author ON messages (author_id, id);"""

# (name, FTS5 options after the columns, or None for no index, extra statement)
VARIANTS = [
    ("messages table alone (no index)", None, None),
    ("FTS5 as migrated: detail=full, prefix '2 3', unicode61", "prefix = '2 3', tokenize = 'unicode61 remove_diacritics 0'", None),
    ("  same, automerge=16", "prefix = '2 3', tokenize = 'unicode61 remove_diacritics 0'", "automerge=16"),
    ("  prefix '2' only", "prefix = '2', tokenize = 'unicode61 remove_diacritics 0'", None),
    ("  no prefix index", "tokenize = 'unicode61 remove_diacritics 0'", None),
    ("  detail=column", "prefix = '2 3', detail = column, tokenize = 'unicode61 remove_diacritics 0'", None),
    ("  detail=none", "prefix = '2 3', detail = none, tokenize = 'unicode61 remove_diacritics 0'", None),
    ("  ascii tokenizer", "prefix = '2 3', tokenize = 'ascii'", None),
]


def words(n, rng):
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzéè") for _ in range(rng.randint(3, 9))) for _ in range(n)]
    weights = [1.0 / (i + 1) for i in range(n)]
    return vocab, weights


def bodies(rows, rng):
    vocab, weights = words(20_000, rng)
    out = []
    for _ in range(rows):
        body = []
        while sum(len(w) + 1 for w in body) < 64:
            body.extend(rng.choices(vocab, weights, k=4))
        out.append(" ".join(body)[:64])
    return out


def run(directory, name, options, extra, texts, batch):
    path = os.path.join(directory, "fts5_insert.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = apsw.Connection(path)
    db.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
    db.execute(MESSAGES)
    if options is not None:
        db.execute(
            "CREATE VIRTUAL TABLE messages_search USING fts5 (words, scope, content = '', "
            f"contentless_delete = 1, {options})"
        )
        if extra:
            db.execute(f"INSERT INTO messages_search (messages_search, rank) VALUES ('{extra.split('=')[0]}', {extra.split('=')[1]})")
    start = time.perf_counter()
    for first in range(0, len(texts), batch):
        with db:
            for i in range(first, min(first + batch, len(texts))):
                db.execute(
                    "INSERT INTO messages (id, room_id, author_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
                    (i + 1, 1 + i % 8, 1 + i % 64, texts[i], 1_700_000_000_000 + i),
                )
                if options is not None:
                    db.execute(
                        "INSERT INTO messages_search (rowid, words, scope) VALUES (?, ?, ?)",
                        (i + 1, texts[i], f"r{1 + i % 8}"),
                    )
    elapsed = time.perf_counter() - start
    db.close()
    us = elapsed / len(texts) * 1e6
    print(f"{name:60} {us:6.1f} µs/row  {len(texts) / elapsed:9,.0f} rows/s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1024, help="rows per transaction (the writer's commit_batch_max)")
    parser.add_argument("--dir", default="/dev/shm")
    args = parser.parse_args()
    texts = bodies(args.rows, random.Random(14))
    directory = tempfile.mkdtemp(dir=args.dir)
    try:
        print(f"SQLite {apsw.sqlite_lib_version()}, {args.rows} rows, {args.batch} per transaction, in {args.dir}")
        for name, options, extra in VARIANTS:
            run(directory, name, options, extra, texts, args.batch)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
