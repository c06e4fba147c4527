"""Shared helpers for agora's integration tests (standard library only): the old name of the
agora_test package, kept so that `from helpers import X` works everywhere. Every name is defined
in one module of agora_test, by concern:

    agora_test/processes.py   start/stop programs, free ports, bounded waits, RSS, fd limits
    agora_test/http.py        http_request, RawConnection, raw bytes, the /bytes pattern
    agora_test/backends.py    build/testbackend, CaptureBackend (a raw Python backend)
    agora_test/lb.py          `agora lb`: start it, /stats, the admin API and its token
    agora_test/load.py        Load (keep-alive GETs from threads), percentile
    agora_test/api.py         `agora server` and its JSON API: ApiClient, field checks, pagination
    agora_test/cluster.py     AgoraCluster: servers on one database behind `agora lb`
    agora_test/prom.py        the Prometheus text format of /metrics: parse, look up, promtool
    agora_test/websocket.py   WebSocket: a raw client (WsClient, frame) and an echo backend process

Each module's docstring lists its helpers. New helpers go into the module of their concern and
are re-exported here.
"""

from agora_test.processes import (LOCALHOST, Process, RssSampler, _listens_on, _port_free, accepts, free_port,
                                  free_port_run, own_outside_address, raise_fd_limit, rss_kib, start_process, stop_all,
                                  up_port_run, wait_for)  # noqa: F401
from agora_test.http import (PatternChecker, RawConnection, _BytesReader, _PATTERN_BLOCK, _PATTERN_PERIOD,
                             _ResponseReader, _header_dict, connect_from, exchange_from, get_from, http_request,
                             parse_responses, pattern_bytes, raw_exchange, read_to_close, send_pattern,
                             silent_connections)  # noqa: F401
from agora_test.backends import CaptureBackend, record_lines, start_testbackend  # noqa: F401
from agora_test.lb import (FROM_TOKEN_FILE, LB_READY_TEXT, admin_request, admin_token, admin_token_path, agora_binary,
                           backend_url, lb_server_stats, lb_stats, start_lb, wait_health_checked)  # noqa: F401
from agora_test.load import Load, percentile  # noqa: F401
from agora_test.api import (ACCOUNT_FIELDS, API_PASSWORD, ApiClient, ApiResponse, ApiUser, POST_FIELDS, RFC3339_UTC,
                            _username_count, _username_lock, check_account, check_post, new_session, next_link,
                            rfc3339_ms, start_agora_server, unique_username, walk_pages)  # noqa: F401
from agora_test.cluster import AgoraCluster  # noqa: F401
from agora_test.db import PgCluster, db_url, is_postgres, sql, store_kind  # noqa: F401
from agora_test.prom import histogram_buckets, metric, metric_or_zero, parse_metrics, promtool_check  # noqa: F401
from agora_test.websocket import (OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsClient, frame, start_ws_backend,
                                  ws_accept)  # noqa: F401
