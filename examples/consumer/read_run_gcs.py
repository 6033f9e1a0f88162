"""Read a published genbatch run from GCS with only google-cloud-storage (docs/output-contract.md)."""
import hashlib
import json
import time

from google.cloud import storage


def read_run(bucket_name: str, run_prefix: str, timeout_s: float = 600, poll_s: float = 10) -> list[dict]:
    bucket, deadline = storage.Client().bucket(bucket_name), time.monotonic() + timeout_s
    while (success := bucket.get_blob(f"{run_prefix}/_SUCCESS")) is None:
        if (failed := bucket.get_blob(f"{run_prefix}/_FAILED")) is not None:
            raise RuntimeError(f"run failed: {failed.download_as_text()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gs://{bucket_name}/{run_prefix} not published after {timeout_s} s")
        time.sleep(poll_s)
    manifest_bytes = bucket.blob(f"{run_prefix}/manifest.json").download_as_bytes()
    if hashlib.sha256(manifest_bytes).hexdigest() != json.loads(success.download_as_bytes())["manifest_sha256"]:
        raise RuntimeError("manifest.json is not the one _SUCCESS vouches for: read the run again")
    manifest, records = json.loads(manifest_bytes), []
    for entry in (f for f in manifest["files"] if f["kind"] == "output"):
        data = bucket.blob(f"{run_prefix}/{entry['path']}").download_as_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise RuntimeError(f"{entry['path']} does not match manifest.json: do not use this run")
        records += [json.loads(line) for line in data.splitlines() if line.strip()]
    if len(records) != manifest["counts"]["generated"]:
        raise RuntimeError(f"read {len(records)} records, manifest.json counts {manifest['counts']['generated']}")
    return records
