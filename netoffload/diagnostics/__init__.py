"""Evidence before anyone turns offload off: checksum captures read the
right way round (checksums), error and drop counters (counters), the
doctor, and the TCP_CRR / TCP_RR / stream measurement (perftest).

May import: the top-level modules, engine/, pool/ and diagnostics/ itself.
"""
