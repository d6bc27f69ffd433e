"""Decisions under uncertainty: posterior prediction of QoIs with credible intervals and risk measures
(:mod:`.prediction`), treatment choice for the tumour twin (:mod:`.oncology`), maintenance decisions and sensor design
for structures (:mod:`.structures`, :mod:`.sensors`), guardrails of a running assimilation (:mod:`.guardrails`), and
the JSON records a run directory keeps of them (:mod:`.records`)."""
