-- The fleet's records (registries, models, devices, deployments and their revisions, rendered
-- manifests, statuses, rollouts, counters) as JSON by kind and name.
CREATE TABLE records (
    kind text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    value json NOT NULL,
    PRIMARY KEY (kind, name)
);

-- Each device's telemetry, deduplicated by (device, seq). `size` is what the record counts
-- against the device's retention.
CREATE TABLE telemetry (
    device text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    accepted_ms bigint NOT NULL,
    size bigint NOT NULL,
    envelope bytea NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX telemetry_by_age ON telemetry (device, accepted_ms);

-- Per device: the bytes of its stored telemetry and the highest seq up to which the fleet has
-- every record (its acknowledgement). Ingestion locks a device's row, so replicas ingesting
-- the same device take turns.
CREATE TABLE telemetry_devices (
    device text COLLATE "C" PRIMARY KEY,
    bytes bigint NOT NULL DEFAULT 0,
    committed bigint NOT NULL DEFAULT 0
);

-- The ONNX file of every registered model version, as it was registered.
CREATE TABLE model_files (
    name text COLLATE "C" NOT NULL,
    version integer NOT NULL,
    onnx bytea NOT NULL,
    PRIMARY KEY (name, version)
);

-- The fleet's own keys and the admin token, created by the first replica that starts; every
-- replica signs and unseals with the same ones.
CREATE TABLE fleet_secrets (
    name text PRIMARY KEY,
    value text NOT NULL
);
