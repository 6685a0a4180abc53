# Install and kind targets (included by the Makefile: `include hack/packaging-make.mk`).
#
#   make kind-up     create a kind cluster ($(KIND_CLUSTER))
#   make image       docker build the image (operator + occurrence-store + agent runtime)
#   make kind-load   load the image into the kind cluster
#   make deploy      helm upgrade --install the chart (kubectl's current context)
#   make e2e         the whole-system scenario (hack/e2e/scenario.sh: helm and kustomize
#                    installs, the example under load, scale 3 -> 5 -> 2, a pod deleted, an
#                    image rolled, the operator SIGKILLed mid-drain, PostgreSQL connections
#                    cut, then the database checked). On kind where Docker and kind exist
#                    (make e2e-kind, hack/e2e-kind.sh), else on the local cluster's real node
#                    (make e2e-local, hack/e2e-local.sh: what `make test` runs).
#
# Every variable can be overridden: make deploy IMAGE_TAG=dev HELM=/usr/local/bin/helm

DOCKER ?= docker
KIND ?= kind
KUBECTL ?= $(firstword $(wildcard .cluster/bin/kubectl) kubectl)
HELM ?= $(firstword $(wildcard .cluster/bin/helm) helm)
KIND_CLUSTER ?= occurrence
IMAGE_REPO ?= ghcr.io/occurrence-dev/occurrence-operator
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/occurrence-operator/Chart.yaml)
IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)
OPERATOR_NAMESPACE ?= occurrence-system
AGENTS_NAMESPACE ?= agents
HELM_RELEASE ?= occurrence-operator

# $(call require,tool,what it is for): fail with a clear message when a tool is missing.
define require
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo "error: '$(1)' not found: $(2)" >&2; exit 1; }
endef

define require-docker
	$(call require,$(DOCKER),install Docker (https://docs.docker.com/get-docker/) to build the image)
	@$(DOCKER) info >/dev/null 2>&1 || { \
	  echo "error: '$(DOCKER)' cannot reach a Docker daemon: start Docker (or set DOCKER=podman)" >&2; exit 1; }
endef

.PHONY: kind-up kind-down image kind-load deploy undeploy e2e e2e-kind e2e-local render-packaging

## kind-up: create the kind cluster $(KIND_CLUSTER) (kept if it exists).
kind-up:
	$(require-docker)
	$(call require,$(KIND),install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation))
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
	  $(KIND) create cluster --name $(KIND_CLUSTER) --wait 120s; \
	fi

## kind-down: delete the kind cluster $(KIND_CLUSTER).
kind-down:
	$(call require,$(KIND),install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation))
	$(KIND) delete cluster --name $(KIND_CLUSTER)

## image: build $(IMAGE) from the Dockerfile (PYTHON_IMAGE=...@sha256:... pins the base).
image:
	$(require-docker)
	$(DOCKER) build -t $(IMAGE) $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) .

## kind-load: load $(IMAGE) into the kind cluster (no registry needed).
kind-load:
	$(require-docker)
	$(call require,$(KIND),install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation))
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

## deploy: install or upgrade the chart (CRD included) into $(OPERATOR_NAMESPACE), watching
## $(AGENTS_NAMESPACE) (created if missing: the chart's namespaced RBAC is a Role there).
deploy:
	$(call require,$(HELM),install helm (https://helm.sh/docs/intro/install/) or run make cluster-build)
	$(call require,$(KUBECTL),install kubectl or run make cluster-build)
	$(KUBECTL) create namespace $(AGENTS_NAMESPACE) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(HELM) upgrade --install $(HELM_RELEASE) charts/occurrence-operator \
	  --namespace $(OPERATOR_NAMESPACE) --create-namespace \
	  --set image.repository=$(IMAGE_REPO) --set image.tag=$(IMAGE_TAG) \
	  --set 'watchNamespaces={$(AGENTS_NAMESPACE)}' --wait --timeout 5m

## undeploy: uninstall the chart (the CRD and your AgentDeployments stay).
undeploy:
	$(HELM) uninstall $(HELM_RELEASE) --namespace $(OPERATOR_NAMESPACE)

## e2e: the scenario on kind where Docker and kind exist, else on the local cluster's real node.
e2e:
	@if command -v $(KIND) >/dev/null 2>&1 && $(DOCKER) info >/dev/null 2>&1; then \
	  $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) e2e-kind; \
	else \
	  echo "e2e: no Docker daemon or kind here: running the same scenario on the local cluster's real node"; \
	  $(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) e2e-local; \
	fi

e2e-kind: kind-up image
	DOCKER=$(DOCKER) KIND=$(KIND) KUBECTL=$(KUBECTL) HELM=$(HELM) KIND_CLUSTER=$(KIND_CLUSTER) \
	  IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(IMAGE_TAG) bash hack/e2e-kind.sh

## e2e-local: the scenario on the local cluster's real node (root; builds images with buildah).
e2e-local:
	bash hack/e2e-local.sh

## render-packaging: regenerate the chart's generated files and manifests/base from their sources.
render-packaging:
	$(firstword $(wildcard .venv/bin/python) python3) hack/render_packaging.py
