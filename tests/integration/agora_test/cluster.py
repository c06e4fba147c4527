"""Several `agora server` processes on one database behind `agora lb`.

    AgoraCluster.start(agora, dir)      one SQLite file, three servers, `agora lb` in front
    AgoraCluster.start(agora, dir, db=URL)   the same on a PostgreSQL database
"""

import pathlib

from .api import API_PASSWORD, ApiClient, ApiUser, start_agora_server, unique_username
from .lb import backend_url, lb_stats, start_lb, wait_health_checked
from .processes import stop_all, wait_for


class AgoraCluster:
    """Three `agora server` processes sharing one database, behind `agora lb` (least-conn,
    one worker, no admin API, no slow start). .lb and .servers are the Processes, .names the
    servers' X-Served-By values, .api an anonymous ApiClient for the balancer, .db the database:
    the SQLite file's path, or the PostgreSQL URL given (agora_test.db.sql reads either)."""

    def __init__(self):
        self.servers = []
        self.lb = None
        self.db = None
        self.api = None

    # The API suites sign up hundreds of accounts from 127.0.0.1, far past the default sign-up
    # limit per address (5 per 10 minutes); test_ft_login_flood.py tests the limits themselves.
    SERVER_ARGS = ("--signup-limit", "off")

    @classmethod
    def start(cls, agora, directory, servers=3, server_args=SERVER_ARGS, lb_args=(), db=None):
        """server_args go to every `agora server`, lb_args to `agora lb` (after the defaults); db
        is a database URL (postgres://...), or None for DIRECTORY/agora.db."""
        cluster = cls()
        cluster.db = db if db is not None else pathlib.Path(directory) / "agora.db"
        try:
            # the first server creates the schema alone, then the others open the file
            cluster.servers.append(start_agora_server(agora, cluster.db, extra_args=server_args))
            for _ in range(servers - 1):
                cluster.servers.append(start_agora_server(agora, cluster.db, extra_args=server_args))
            args = ["--admin-listen", "off", "--slow-start", "0", "--workers", "1",
                    "--health-interval", "200ms"] + list(lb_args)
            for s in cluster.servers:
                args += ["--backend", backend_url(s)]
            cluster.lb = start_lb(agora, args)
            wait_health_checked(cluster.lb.port)
            if not wait_for(lambda: all(s["state"] == "up" for s in lb_stats(cluster.lb.port)["servers"]), 10.0):
                raise RuntimeError("not every server is up: %r" % lb_stats(cluster.lb.port))
        except BaseException:
            cluster.stop()
            raise
        cluster.api = ApiClient(cluster.lb.port)
        return cluster

    @property
    def names(self):
        return [s.name for s in self.servers]

    def stop(self):
        """Stops the balancer and the servers. Returns a list of complaints (a process that did
        not exit with status 0), empty when all went well."""
        return stop_all(([self.lb] if self.lb else []) + self.servers, timeout=10.0)

    def create_account(self, prefix="u", password=API_PASSWORD, display_name=None):
        """Signs up a fresh account through the balancer. Returns (username, account dict);
        raises AssertionError unless the answer is 201."""
        username = unique_username(prefix)
        body = {"username": username, "password": password}
        if display_name is not None:
            body["display_name"] = display_name
        resp = self.api.post("/api/v1/accounts", body)
        if resp.status != 201:
            raise AssertionError("sign-up of %s answered %r" % (username, resp))
        return username, resp.json

    def log_in(self, username, password=API_PASSWORD):
        """Logs in through the balancer; returns the token (AssertionError unless 200)."""
        resp = self.api.post("/api/v1/sessions", {"username": username, "password": password})
        if resp.status != 200:
            raise AssertionError("log-in of %s answered %r" % (username, resp))
        return resp.json["token"]

    def new_user(self, prefix="u", password=API_PASSWORD):
        """Signs up and logs in a fresh account -> ApiUser."""
        username, account = self.create_account(prefix, password)
        token = self.log_in(username, password)
        return ApiUser(username, password, account, token, self.api.as_user(token))

    def new_users(self, n, prefix="u"):
        """n fresh ApiUsers, made concurrently (sign-up and log-in each cost an Argon2 hash)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(n, 6)) as pool:
            return list(pool.map(lambda _: self.new_user(prefix), range(n)))
