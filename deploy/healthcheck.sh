#!/bin/bash
# fmnist-healthcheck - the container's HEALTHCHECK: GET /healthz of the local
# fmnist-serve and exit 0 only on "200".  Uses bash's /dev/tcp so the runtime
# image needs neither curl nor wget.  Port and address from FMNIST_PORT /
# FMNIST_HOST (a wildcard address is checked on 127.0.0.1).
port=${FMNIST_PORT:-8080}
host=${FMNIST_HOST:-127.0.0.1}
case $host in 0.0.0.0|::|"[::]"|"") host=127.0.0.1 ;; esac
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 4 status <&3 || exit 1
case $status in
"HTTP/1."?" 200"*) exit 0 ;;
esac
echo "fmnist-healthcheck: $status" >&2
exit 1
