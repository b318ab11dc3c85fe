# Convenience wrapper around Meson.  The quick start is `make demo` and
# `make test`; each installs missing Debian packages first (as root).
BUILD ?= build
MESON_SETUP = meson setup --buildtype=debugoptimized -Dwerror=true

.PHONY: all deps build demo test bench clean install

all: build

deps:
	@./scripts/install-deps.sh test

$(BUILD)/build.ninja:
	$(MESON_SETUP) $(BUILD)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo:
	@./scripts/install-deps.sh demo
	@$(MAKE) --no-print-directory build
	./scripts/demo.sh $(BUILD)

test:
	@./scripts/install-deps.sh test
	BUILD=$(BUILD) ./scripts/run-tests.sh

bench: build
	./bench/run.sh $(BUILD)

install: build
	meson install -C $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
