"""The retrain trigger: one service for every sidecar and replica.

Drift CloudEvents come in (:mod:`.app`); :mod:`.policy` decides (k of n windows,
minimum samples, cooldown, one run in flight, daily cap) as a pure function;
:mod:`.state` keeps dedupe, run claims and the audit trail on S3; :mod:`.service`
ties them together and drives runs on a backend (:mod:`.backends`: KFP or kfp.local).
"""
