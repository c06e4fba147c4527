"""agora's integration-test helpers (standard library only), one module per concern:

    processes   start/stop programs, free ports, bounded waits, RSS, fd limits
    http        http_request, RawConnection, raw bytes, the /bytes pattern
    backends    build/testbackend, CaptureBackend (a raw Python backend)
    lb          `agora lb`: start it, /stats, the admin API and its token
    load        Load (keep-alive GETs from threads), percentile
    api         `agora server` and its JSON API: ApiClient, field checks, pagination
    cluster     AgoraCluster: servers on one database behind `agora lb`

Tests import them from helpers.py (`from helpers import X`), which re-exports every name.
Headers come back as dicts with lower-case names; bodies are bytes; every wait is bounded.
"""
