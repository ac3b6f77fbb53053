"""``emotion bench``: throughput, latency and cost of the platform against their ceilings.

Every figure is measured on the real local stack (Kafka, Redis, Triton, Prometheus on 127.0.0.1,
the five services as processes) or, for the ceilings, in one process on the same audio, in one
run, and written to ``benchmarks/results/`` (JSON, Markdown, plots).  One module per section:

=================  =====================================================================================
module             what it measures
=================  =====================================================================================
``workload``       the audio: generated agent/customer calls, and their utterances as the ASR service cuts them
``ceilings``       bare faster-whisper (the ASR stage alone) and the whole model chain in one process
``pipeline``       end to end: N concurrent calls, real-time and as fast as possible; the cache (same audio again)
``models``         each Triton model against the same model code in-process, and dynamic batching
``fusion``         the fusion heads (CA-MoE, SP-MoE, proposed): parameters and latency beside the paper
``monitor``        CPU and memory per process, Kafka consumer lag, the services' metrics
``report``         the ratios, the targets, the Markdown table and the plots
``run``            the command: options, the stack, the order of the sections, the results folder
=================  =====================================================================================
"""
