# The proxy of deploy/compose.yaml: Debian 12's nginx (the same 1.22 that
# tests/deploy/test_nginx.py runs) on debian:bookworm-slim.  The
# configuration is mounted: deploy/nginx.conf -> /etc/nginx/nginx.conf and
# deploy/fmnist-upstream.conf -> /etc/nginx/fmnist-upstream.conf.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/*
EXPOSE 8080
STOPSIGNAL SIGQUIT
# deploy/nginx.conf names no user: workers run as www-data, who owns
# /var/lib/nginx (request bodies over 256 KiB are buffered there).
CMD ["nginx", "-g", "daemon off; user www-data;"]
