/*
 * store-migrations.c - the schema, as an append-only list of migrations.
 *
 * Each entry moves the database from version N-1 to N (PRAGMA
 * user_version).  Never edit a released entry: add a new one.  Later
 * modules (models, gates, deployments, deliveries, schedules) append here.
 */
#include "config.h"

#include "store-int.h"
#include "util.h"

const struct mlp_migration mlp_store_migrations[] = {
	{1, "runs, stage attempts, outputs, metrics",
	 "CREATE TABLE runs (\n"
	 "  id INTEGER PRIMARY KEY,\n"
	 "  pipeline TEXT NOT NULL,\n"
	 "  pipeline_path TEXT,\n"
	 "  pipeline_text TEXT NOT NULL,\n"
	 "  pipeline_sha256 TEXT NOT NULL,\n"
	 "  status TEXT NOT NULL CHECK (status IN ('queued','running','succeeded',\n"
	 "         'failed','cancelled','interrupted')),\n"
	 "  trigger TEXT NOT NULL,\n"
	 "  user TEXT,\n"
	 "  git_commit TEXT,\n"
	 "  git_ref TEXT,\n"
	 "  workspace TEXT,\n"
	 "  created_at INTEGER NOT NULL,\n"
	 "  started_at INTEGER,\n"
	 "  ended_at INTEGER,\n"
	 "  exit_code INTEGER,\n"
	 "  message TEXT\n"
	 ");\n"
	 "CREATE INDEX runs_by_pipeline ON runs(pipeline, id);\n"
	 "CREATE INDEX runs_by_status ON runs(status, id);\n"
	 "CREATE TABLE stages (\n"
	 "  id INTEGER PRIMARY KEY,\n"
	 "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
	 "  stage TEXT NOT NULL,\n"
	 "  attempt INTEGER NOT NULL,\n"
	 "  kind TEXT NOT NULL,\n"
	 "  status TEXT NOT NULL CHECK (status IN ('running','succeeded','failed',\n"
	 "         'skipped','cancelled','interrupted')),\n"
	 "  exit_code INTEGER,\n"
	 "  signal INTEGER,\n"
	 "  timed_out INTEGER NOT NULL DEFAULT 0,\n"
	 "  started_at INTEGER,\n"
	 "  ended_at INTEGER,\n"
	 "  log_path TEXT,\n"
	 "  message TEXT,\n"
	 "  UNIQUE (run_id, stage, attempt)\n"
	 ");\n"
	 "CREATE TABLE outputs (\n"
	 "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
	 "  stage TEXT NOT NULL,\n"
	 "  key TEXT NOT NULL,\n"
	 "  value TEXT NOT NULL,\n"
	 "  PRIMARY KEY (run_id, stage, key)\n"
	 ");\n"
	 "CREATE TABLE metrics (\n"
	 "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
	 "  stage TEXT NOT NULL,\n"
	 "  name TEXT NOT NULL,\n"
	 "  value REAL NOT NULL,\n"
	 "  PRIMARY KEY (run_id, stage, name)\n"
	 ");\n"},
};

const size_t mlp_store_nmigrations = MLP_ARRAY_SIZE(mlp_store_migrations);
