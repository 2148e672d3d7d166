"""Knobs of the face verifier service: replicas, dynamic batching, back-pressure, monitoring.

The project `Settings` nests one `VerifierSettings` as `settings.verifier`
(`EXAMDAY_VERIFIER__MAX_BATCH=16`); the model knobs stay in `infra.settings.ml.FaceSettings`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class VerifierSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The pool actor's name; replicas are named after it. Two pools (say one for
    # enrolment, one for monitoring) need two names.
    pool_name: str = Field(default="examday-face-pool", pattern=r"^[a-z0-9][a-z0-9-]{2,40}$")

    # Replicas, autoscaled between these bounds by the frames queued per replica.
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=2, ge=1)
    target_queue: int = Field(default=8, ge=1)
    scale_interval_s: float = Field(default=2.0, gt=0)
    scale_down_after_s: float = Field(default=30.0, ge=0)
    # A CPU replica with a backlog runs flat out; one that gets less than this much of a
    # core is starved by its node, where another replica would add no throughput and
    # take CPU from everything else (the gateway first): no replica is added then.
    # 0 scales on the queue alone. Replicas with GPUs are not held to it.
    scale_up_min_cpu: float = Field(default=0.6, ge=0)
    # Fractions, so that replicas schedule next to everything else on a small node;
    # num_gpus is asked for only when the cluster has GPUs.
    num_cpus: float = Field(default=0.5, ge=0)
    num_gpus: float = Field(default=0.5, ge=0)
    # torch intra-op threads per replica; 0 keeps Ray's choice (its CPUs, at least 1).
    torch_threads: int = Field(default=0, ge=0)

    # Dynamic batching: a batch runs as soon as it is full or the first frame waited this long.
    max_batch: int = Field(default=8, ge=1)
    max_wait_s: float = Field(default=0.01, ge=0)
    # The niceness of a replica's join lane, its model thread for candidates' enrolment,
    # verification and liveness; the monitoring lane runs one step below it
    # (`actors.face.batcher`). `queued`: below the gateway and the media shards, for
    # replicas that share cores with them (`examday up`): on the 2-core rehearsal box
    # `live` took the login storm's CPU (login p99 26-48 s against 1.1 s, docs/capacity.md).
    # `live`: for replicas on nodes of their own (the KubeRay `gpu` group), where only the
    # lanes compete and candidates should win by the widest margin.
    join_priority: Literal["live", "queued"] = "queued"
    # Frames a replica holds (waiting plus running) before it answers 503 verifier_busy.
    max_queue: int = Field(default=64, ge=1)
    # A call not answered by then is answered 503; its work is dropped if not started.
    call_timeout_s: float = Field(default=30.0, gt=0)

    # Candidate-facing limits.
    max_frame_bytes: int = Field(default=256 * 1024, ge=1024)  # each liveness frame
    liveness_ttl_s: int = Field(default=120, ge=5)
    verify_requests_per_window: int = Field(default=30, ge=1)  # any outcome, per candidate
    verify_window_s: int = Field(default=3600, ge=1)

    # Continuous monitoring: candidates kept in memory, and when an idle one is forgotten.
    monitor_max_candidates: int = Field(default=5000, ge=1)
    monitor_idle_s: float = Field(default=300.0, gt=0)
    # Under overload monitoring slows down first: each sample the verifier refuses (busy)
    # doubles the interval between the samples of a candidate the monitor analyses, from
    # the media plane's sampling interval up to this; each one analysed takes a tenth of
    # that interval off again. Samples that come sooner are skipped, never queued.
    monitor_max_interval_s: float = Field(default=120.0, gt=0)
    # A candidate's sample whose one face barely moved and looks the same as in the last
    # embedded sample takes that sample's embedding (`ml.embedding.Reuse`), at most this
    # many samples in a row before one is embedded again; 0 embeds every sample. It saves
    # the embedding, most of a CPU sample's cost; the join path always embeds.
    monitor_reuse_max_age: int = Field(default=5, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> VerifierSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        if self.max_batch > self.max_queue:
            raise ValueError("max_batch must not exceed max_queue")
        return self
