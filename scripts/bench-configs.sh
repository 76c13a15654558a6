# Sourced by scripts/bench-gateway.sh, scripts/bench-peers.sh and scripts/bench-low-rate.sh: the
# configs of the two proxies they compare, written the same way everywhere so that every bench
# measures the same nginx and the same stilts.

# write_nginx_conf DIR LISTEN_PORT UPSTREAM_PORT [MAIN_LINE]: DIR/nginx.conf for nginx as a plain
# reverse proxy: one worker, no access log, keep-alive to the upstream and to clients, responses
# not buffered (a stream's events go out as they come). MAIN_LINE goes into the main context (for
# instance `master_process off;` under valgrind).
write_nginx_conf() {
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<NGX
worker_processes 1;
${4:-}
daemon off;
error_log $1/error.log warn;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream mock { server 127.0.0.1:$3; keepalive 128; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
NGX
}

# write_stilts_conf FILE LISTEN_PORT UPSTREAM_PORT: one route, `bench`, with one deployment on the
# fake upstream through the openai plugin.
write_stilts_conf() {
    cat >"$1" <<TOML
[server]
listen = "127.0.0.1:$2"

[[routes.bench.deployments]]
name = "mock"
plugin = "openai"
base_url = "http://127.0.0.1:$3/v1"
model = "bench-model"
TOML
}
