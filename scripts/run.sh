#!/usr/bin/env bash
# Start Rasa and Sila together; Ctrl-C stops both.
set -uo pipefail
cd "$(dirname "$0")/.."
set -a; [ -f .env ] && . ./.env; set +a
HOST=${SILA_HOST:-127.0.0.1}; PORT=${SILA_PORT:-8080}
RASA_PORT=${SILA_RASA_PORT:-5005}
export SILA_RASA_URL=${SILA_RASA_URL:-http://127.0.0.1:$RASA_PORT}
mkdir -p var
sed "s#http://127.0.0.1:8080#http://$HOST:$PORT#" endpoints.yml > var/endpoints.yml

PYTHONPATH=$PWD TF_CPP_MIN_LOG_LEVEL=3 .venv-rasa/bin/rasa run --enable-api -i 127.0.0.1 -p "$RASA_PORT" \
  -m models/sila.tar.gz --endpoints var/endpoints.yml --credentials credentials.yml > var/rasa.log 2>&1 &
RASA_PID=$!
.venv/bin/sila serve &
SILA_PID=$!
trap 'echo; echo "stopping Sila and Rasa"; kill $SILA_PID $RASA_PID 2>/dev/null; wait; exit 0' INT TERM

echo "Rasa is loading the model (log: var/rasa.log)…"
for _ in $(seq 1 180); do
  curl -fs "http://127.0.0.1:$RASA_PORT/status" >/dev/null 2>&1 && break
  kill -0 $RASA_PID 2>/dev/null || { echo "Rasa stopped; see var/rasa.log"; kill $SILA_PID; exit 1; }
  sleep 1
done
cat <<MSG

  Sila is ready.
    Demo hospital and web chat:  http://$HOST:$PORT/
    Health:                      http://$HOST:$PORT/healthz
    Rasa (internal):             $SILA_RASA_URL
  Press Ctrl-C to stop.

MSG
wait
