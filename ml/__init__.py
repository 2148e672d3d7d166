"""Face verification for examday: intake, detection, quality, embedding, liveness, monitoring.

Public surface (import from the modules; this package imports nothing, so that
`infra.settings.ml`, `ml.images`, `ml.templates` and `ml.monitor` stay free of torch and OpenCV):

    infra.settings.ml.FaceSettings                      every knob, nested as settings.face
    ml.images.decode_image(data, settings)      untrusted bytes -> RGB uint8 array
    ml.pipeline.FacePipeline(settings)          models, loaded once per instance; its detector
                                                is settings.detector (YuNet on CPU, MTCNN on GPU)
        .analyse_batch(images, reuse=None) -> list[FrameAnalysis]
                                                reuse: monitoring samples' `Reuse` hints
        .enrol(image) -> FaceTemplate
        .verify(template, image) -> VerifyResult
    ml.templates.FaceTemplate                   .to_bytes() / .from_bytes(data)
    ml.liveness.new_challenge(rng), LivenessChecker(pipeline).check(challenge, frames)
    ml.monitor.CandidateMonitor(template, persist_samples=...).observe(t, index, frame)
    ml.thresholds.threshold_for(backend)        the one place thresholds live
    python -m ml.evaluate                       the evaluation behind the thresholds
    python -m ml.embedding_costs                ways to embed a sample: CPU ms and agreement
"""
