#!/bin/sh
# A pull request's sandbox, as a CI job runs it: create a Sandbox forking one
# Deployment with the image the job built, wait until it is Ready, run the
# tests with its routing key, and delete it (also when the tests fail; its
# ttl deletes it anyway if the job is killed).
#
#   examples/ci-sandbox.sh PR IMAGE TEST_COMMAND [ARGS...]
#
# TEST_COMMAND runs with DETOUR_ROUTING_KEY set: send it on every request as
#   baggage: detour-routing-key=$DETOUR_ROUTING_KEY
# Settings (environment): NAMESPACE (default), SERVICE (reviews), DEPLOYMENT
# (reviews), CONTAINER (reviews), TTL (2h), TIMEOUT for Ready (300s).
set -eu

pr=$1
image=$2
shift 2
name="pr-$pr"
namespace=${NAMESPACE:-default}

kubectl apply -f - <<YAML
apiVersion: detour.dev/v1alpha1
kind: Sandbox
metadata:
  name: $name
  namespace: $namespace
spec:
  routingKey: $name
  ttl: ${TTL:-2h}
  forks:
    - service:
        name: ${SERVICE:-reviews}
      forkOf:
        kind: Deployment
        name: ${DEPLOYMENT:-reviews}
      customizations:
        images:
          - container: ${CONTAINER:-reviews}
            image: "$image"
YAML
trap 'kubectl delete sandbox "$name" -n "$namespace" --wait=false' EXIT

if ! kubectl wait --for=condition=Ready "sandbox/$name" -n "$namespace" --timeout="${TIMEOUT:-300s}"; then
    kubectl get sandbox "$name" -n "$namespace" -o yaml >&2
    exit 1
fi
DETOUR_ROUTING_KEY=$name "$@"
