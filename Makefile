# One entry point for a fresh machine. `make demo` is the main job, `make test` the whole suite.
# Both install what is missing (Debian packages for headless rendering, a project-local .venv
# with the PyTorch that tch links) and then use plain cargo.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/vla-target
# lavapipe (Mesa's CPU Vulkan) complains without a runtime dir; give it a private one.
export XDG_RUNTIME_DIR ?= /tmp/vla-runtime-$(shell id -u)
PYTHON ?= python3
TORCH_VERSION := 2.13.0
# Python Cyclone DDS: the independent DDS implementation of the ROS 2 interop test.
CYCLONEDDS_VERSION := 11.0.1
APT_PACKAGES := mesa-vulkan-drivers libvulkan1 xvfb xauth libx11-6 libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6
CARGO ?= cargo
VLA := $(CARGO) run --quiet --bin vla --

.PHONY: setup apt venv venv-lerobot test test-e2e lint demo bench clean-runs

setup: apt venv venv-lerobot
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)

# Debian packages, installed only when one is missing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# .venv with torch==$(TORCH_VERSION); .venv/libtorch points at the wheel's libtorch (see .cargo/config.toml).
venv: .venv/libtorch
	@if ! .venv/bin/python -c "import cyclonedds" 2>/dev/null; then \
	  echo "installing cyclonedds==$(CYCLONEDDS_VERSION) into .venv (ROS 2 interop test peer)"; \
	  .venv/bin/pip install -q cyclonedds==$(CYCLONEDDS_VERSION); \
	fi

# Python lerobot for the dataset interoperability tests. It pins torch<2.11, so it lives in a
# venv of its own, never in the .venv whose torch 2.13 tch links.
LEROBOT_VERSION := 0.4.4
venv-lerobot:
	@if ! .venv-lerobot/bin/python -c "import lerobot" 2>/dev/null; then \
	  echo "creating .venv-lerobot with lerobot==$(LEROBOT_VERSION)"; \
	  $(PYTHON) -m venv .venv-lerobot && .venv-lerobot/bin/pip install -q --upgrade pip && .venv-lerobot/bin/pip install -q lerobot==$(LEROBOT_VERSION); \
	fi

.venv/libtorch:
	@if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
	  echo "creating .venv with torch==$(TORCH_VERSION) (about 5 GB)"; \
	  $(PYTHON) -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q torch==$(TORCH_VERSION); \
	fi
	ln -sfn "$$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')" .venv/libtorch

# libtorch's random generator is process-global, so the model crate's seeded tests run on one
# test thread (the rest of the suite runs in parallel).
test: setup
	VLA_REQUIRE_LEROBOT=1 VLA_REQUIRE_DDS=1 $(CARGO) test --workspace --no-fail-fast --exclude vla-model
	$(CARGO) test -p vla-model --no-fail-fast -- --test-threads=1
	$(MAKE) --no-print-directory test-e2e

# The whole path through ROS 2 with a trained policy: `vla ros sim` + `vla ros bridge` must
# match `vla eval` on pick. The policy is a small one trained here (20 pick demonstrations,
# 300 steps, a few minutes), cached in runs/e2e; E2E_RUN=runs/demo/run uses the demo's.
E2E_RUN ?= runs/e2e/run
test-e2e: setup
	@if [ ! -f $(E2E_RUN)/model.safetensors ]; then \
	  rm -rf runs/e2e && \
	  $(VLA) collect --suite pick --episodes 20 --envs 2 --noise 0.004 --out runs/e2e/data && \
	  $(VLA) train --data runs/e2e/data --out $(E2E_RUN) --steps 300; \
	fi
	VLA_REQUIRE_DDS=1 VLA_REQUIRE_E2E=1 VLA_E2E_CKPT=$(CURDIR)/$(E2E_RUN) $(CARGO) test --test ros_e2e -- --nocapture

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: setup
	$(VLA) demo

bench: setup
	$(VLA) bench sim --envs 1 --steps 300
	$(VLA) bench sim --envs 2 --steps 300
	$(VLA) bench train --config vla/configs/tiny.toml
	$(VLA) bench policy $$( [ -d runs/demo/run ] && echo --ckpt runs/demo/run )

clean-runs:
	rm -rf runs
