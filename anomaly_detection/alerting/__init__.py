"""Alert notifications: incident events derived from the store, delivered to every channel.

`events` derives what to notify (once per incident and event), `channels`
sends one notification, `delivery` decides what is due and records every
attempt, `service` is one cycle of `python -m anomaly_detection.notifier`.
"""
