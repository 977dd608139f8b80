# govmm: build, test and benchmark. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO      ?= go
BIN     := bin/govmm
GUEST   ?= ../shared/guest
# A stock kernel runs only inside KVM's instruction emulator on a PVM host
# (kvm_pvm): boot the shared patched kernel there, and elsewhere Debian's
# stock kernel, which `make guests` fetches (guests/README.md).
ifneq ($(wildcard /sys/module/kvm_pvm),)
KERNEL  ?= $(GUEST)/vmlinux
INITRD  ?= guests/out/rootfs.cpio.gz
else
KERNEL  ?= guests/out/debian/vmlinuz
INITRD  ?= guests/out/debian/rootfs.cpio.gz
endif
SMP     ?= 2
MEM     ?= 512M
APPEND  ?= console=ttyS0 reboot=k panic=-1 quiet

.PHONY: help build guests run test test-race fuzz check bench bench-exits bench-boot bench-mem bench-semtest bench-blk bench-net deps clean
help:
	@echo "make deps         install the Debian packages the build and tests need (root)"
	@echo "make run          build govmm and the guest, boot it (--smp $(SMP)), print the exit table"
	@echo "make test         go vet + the full test suite (needs /dev/kvm for the VM tests); lists every skipped test and why"
	@echo "make test-race    the suite under the race detector, the govmm the CLI tests run included (cgo; ~5x slower)"
	@echo "make fuzz         every fuzz target for FUZZTIME (default $(FUZZTIME)) each, one after another"
	@echo "make bench-exits  cost of one port-I/O exit: C loop vs govmm (stats on/off, top RIPs on, exit trace on, sync regs off, seccomp on beside its child-process control), and of recording one exit (statistics, trace)"
	@echo "make bench-boot   boot time and RSS: govmm vs QEMU microvm vs the C reference VMM"
	@echo "make bench-mem    a page-fault-heavy guest (faultbench) with guest RAM in huge pages (default) and without"
	@echo "make bench-semtest sem_test on the host, in govmm (each knob) and in QEMU"
	@echo "make bench-blk    fio (4k random QD1/QD32, 1M sequential) on the host, in govmm (each datapath knob) and in QEMU (threads, native, io_uring): IOPS, latency, CPU/GiB, exits/request"
	@echo "make bench-net    virtio-net TCP/UDP throughput and latency host<->guest over a tap: govmm (offloads on/off) vs QEMU (root)"
	@echo "make bench-kbuild a kernel build on the host, in govmm (each knob) and in QEMU (root)"
	@echo "make guests       the busybox initramfs, its guest programs and bench.cpio (+ fio, iperf3) in guests/out/; off PVM hosts also Debian's kernel"

build: $(BIN)
# CGO_ENABLED=0: a static binary, without libc and the dynamic loader
# mapped (about 1.8 MiB less RSS); nothing in govmm needs cgo.
$(BIN): $(shell find . -name '*.go' -not -path './guests/out/*') go.mod
	CGO_ENABLED=0 $(GO) build -o $@ ./cmd/govmm

# guests/apt-packages.txt builds the guests; .ci/apt-packages.txt holds the
# reference peers and checkers the tests compare with (QEMU, Prometheus,
# iasl for the DSDT).
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$(cat guests/apt-packages.txt .ci/apt-packages.txt)

guests:
	$(MAKE) -C guests

run: build guests
	$(BIN) run --kernel $(KERNEL) --initrd $(INITRD) --smp $(SMP) --mem $(MEM) --append "$(APPEND)"

# The README's test command. Builds the guests first: the boot tests need them.
# internal/testsummary turns go test's JSON back into its text and lists
# every skipped test with its reason before the package results, which
# stay the last lines; the exit status is go test's (pipefail).
test: guests
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m -json ./... | $(GO) run ./internal/testsummary

# The suite under the race detector (cgo and gcc), about five times
# slower than `make test` and not part of it. cmd/govmm's tests run the
# race detector's build of govmm (GOVMM_TEST_RACE=1), not their own:
# their QMP client, go-qemu's SocketMonitor at the pinned version, races
# on its line buffer (runQMP's comment), which is not govmm's to mend.
test-race: guests
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m -json $$($(GO) list ./... | grep -v '/cmd/govmm$$') | $(GO) run ./internal/testsummary
	GOVMM_TEST_RACE=1 $(GO) test -count=1 -timeout 40m -json ./cmd/govmm/ | $(GO) run ./internal/testsummary

# go test -fuzz takes one target per run: list each package's targets and
# run them in turn. `make test` already runs every target's seed corpus
# (testdata/fuzz/<target>/ and the seeds added in code). FUZZTIME is a
# duration or an execution count (10000000x); FUZZFLAGS adds flags, e.g.
# -parallel 1 to leave the other cores alone.
FUZZTIME  ?= 30s
FUZZFLAGS ?=
fuzz:
	for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$target"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$pkg; \
		done; \
	done

bench: bench-exits bench-boot bench-mem bench-semtest bench-blk

# Every benchmark runs its rounds inside one iteration (-benchtime 1x: with
# Nx the testing package would first run, and print, a one-round table),
# each round in a rotated order, and prints median (min-max, n, failed runs).
BOOT_ROUNDS ?= 5
bench-boot: guests
	BOOT_ROUNDS=$(BOOT_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkBoot -benchtime 1x -timeout 30m ./cmd/govmm/

MEM_ROUNDS ?= 3
bench-mem: guests
	MEM_ROUNDS=$(MEM_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkMemFaults -benchtime 1x -timeout 60m ./cmd/govmm/

# SEMTEST_ITEMS / SEMTEST_SPIN override sem_test's arguments.
SEMTEST_ROUNDS ?= 3
bench-semtest: guests
	SEMTEST_ROUNDS=$(SEMTEST_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkSemTest -benchtime 1x -timeout 60m ./cmd/govmm/

# BLK_ROUNDS rounds of every fio job, BLK_RUNTIME measured after a
# BLK_RAMP ramp; BLK_JOBS and BLK_ONLY (regular expressions) pick jobs and
# variants, BLK_DIR where the image lives (cmd/govmm/blk_bench_test.go).
# The rounds run inside one iteration; the defaults take about 28 minutes.
BLK_ROUNDS ?= 3
bench-blk: guests
	BLK_ROUNDS=$(BLK_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkBlockIO -benchtime 1x -timeout 60m ./cmd/govmm/

# Needs root (a network namespace and a tap) and iperf3 on the host.
# NET_ROUNDS rounds, each variant once per round in a rotated order;
# NET_SECONDS each iperf3 job's length, NET_RR the latency job's round
# trips; NET_JOBS / NET_ONLY (regular expressions) pick jobs / variants.
NET_ROUNDS ?= 3
bench-net: guests
	NET_ROUNDS=$(NET_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkNet -benchtime 1x -timeout 60m ./cmd/govmm/

# Not part of `bench`: the image needs root and Debian's mirror, and one
# round of every row takes 20-30 minutes (KBUILD_FULL=1 with host, govmm
# and QEMU alone: about 50). KBUILD_FULL=1 builds vmlinux instead of the
# bounded default; KBUILD_ONLY=REGEXP picks the guest variants;
# KBUILD_ROUNDS rounds, each in a rotated order, reported as medians.
KBUILD_ROUNDS ?= 1
.PHONY: bench-kbuild
bench-kbuild: guests
	$(MAKE) -C guests kbuild
	KBUILD_ROUNDS=$(KBUILD_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkKbuild -benchtime 1x -timeout 600m ./cmd/govmm/

EXIT_ROUNDS ?= 25
bench-exits:
	EXIT_ROUNDS=$(EXIT_ROUNDS) $(GO) test -run '^$$' -bench BenchmarkPortIOExit -benchtime 1x ./vmm/
	$(GO) test -run '^$$' -bench 'BenchmarkRecord' ./exitstats/
	$(GO) test -run '^$$' -bench 'BenchmarkTraceExit' ./exittrace/

clean:
	rm -rf bin
	$(MAKE) -C guests clean
