# Jukebox in C: top-level build.
#
#   make              libjukebox + every executable (CPU)       -> build/bin/
#   make CUDA=1       also the CUDA side of the kernel layer (nvcc)
#                     (plain make builds the same .cu files as C++ against the CPU emulation
#                     of CUDA, common/cuda_emu, into $(BUILD)/libjukebox-emu.a; tests/test_cuda_*.c
#                     link it. See docs/cuda.md.)
#   make test-gpu     on a machine with a GPU: CUDA=1 build (build-cuda/), the CUDA tests on
#                     the GPU (with forward/step timings), the golden suite on the CPU and
#                     (JB_GOLDEN_DEVICE=cuda) its vqvae/prior/pipeline cases on the GPU
#   make test         build and run every test; ends with "N passed, N failed"
#   make asan         the tests under AddressSanitizer + UBSan  (build-asan/)
#   make golden       only the golden runner (GOLDEN=dir to point it elsewhere)
#   make fuzz         run the fuzz targets for a bounded time (FUZZ_SECONDS)
#   make demo         run the whole pipeline on the bundled model
#   make install      PREFIX=/usr/local DESTDIR=: executables and `jukebox` in bin/ (also
#                     `jukebox-demo`), the bundled model in share/jukebox/models/default
#
# Objects go to $(BUILD); sources are found by wildcard, so a new module in a layer folder
# of common/ (README "Where things live") or a new tests/test_*.c needs no edit here.
# Includes stay flat (#include "jb_err.h"): every layer folder is one -I; `make check-layers`
# (scripts/check-layers.sh, run by make test) fails on an include that points up a layer.

BUILD    ?= build
CC       ?= gcc
NVCC     ?= nvcc
PREFIX   ?= /usr/local
CUDA     ?= 0
SAN      ?= 0
OPT      ?= -O2
GOLDEN   ?= tests/golden

# The layers of common/, bottom first (scripts/check-layers.py reads this line). cuda_emu
# (the CPU emulation of the CUDA runtime) is on the include path of the emulated build only.
# -Icommon and common/*.c: a module still in common/ itself builds, and check-layers names it.
LAYERS   := core ops media model cuda_emu cuda convert train wire serve
LAYER_INC := $(addprefix -Icommon/,$(filter-out cuda_emu,$(LAYERS))) -Icommon
CPPFLAGS += $(LAYER_INC) -D_GNU_SOURCE
CFLAGS   += -std=c11 $(OPT) -g -fopenmp -march=x86-64-v3 -Wall -Wextra -Wno-unused-parameter -MMD -MP
LDLIBS   += -lopenblas -ljansson -lzmq -lmsgpackc -llz4 -lsndfile -lsoxr -lsystemd -lz -lm -lpthread
LDFLAGS  += -fopenmp

ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

COMMON_SRC := $(wildcard common/*.c $(addsuffix /*.c,$(addprefix common/,$(LAYERS))))
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)

ifeq ($(CUDA),1)
CUDA_HOME ?= /usr/local/cuda
CUDA_SRC  := $(wildcard common/cuda/*.cu)
CUDA_OBJ  := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
CPPFLAGS  += -DJB_HAVE_CUDA=1 -I$(CUDA_HOME)/include
LDLIBS    += -L$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
NVCCFLAGS ?= -O2 -std=c++17 $(LAYER_INC) -DJB_HAVE_CUDA=1 \
             -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90 \
             -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fopenmp --Werror all-warnings
endif

LIB := $(BUILD)/libjukebox.a

# CUDA emulation: without CUDA=1 the .cu files are compiled as C++ against common/cuda_emu
# (cuda_runtime.h / cublas_v2.h on the CPU) into a separate library linked by tests/test_cuda_*.
# With CUDA=1 those tests link the real CUDA objects in $(LIB) instead.
CXX      ?= g++
EMU_LIB  := $(BUILD)/libjukebox-emu.a
EMU_SRC  := $(wildcard common/cuda/*.cu) $(wildcard common/cuda_emu/*.cpp)
EMU_OBJ  := $(EMU_SRC:%=$(BUILD)/emu/%.o)
EMU_CXXFLAGS := -std=c++17 $(OPT) -g -fopenmp -march=x86-64-v3 -Wall -Wextra -Wno-unused-parameter \
                -MMD -MP -DJB_CUDA_EMU -DJB_HAVE_CUDA=1 -Icommon/cuda_emu $(LAYER_INC) -D_GNU_SOURCE
ifeq ($(SAN),1)
EMU_CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifeq ($(CUDA),1)
CUDA_TEST_LIBS := $(LIB)
CUDA_TEST_CPPFLAGS :=
else
CUDA_TEST_LIBS := $(EMU_LIB) $(LIB)
CUDA_TEST_CPPFLAGS := -DJB_HAVE_CUDA=1 -DJB_CUDA_EMU -Icommon/cuda_emu
endif

# Stages: every .c in the stage's directory makes one executable.
STAGES := encoder prior-top upsampler-mid upsampler-bottom decoder
STAGE_BINS := $(foreach s,$(STAGES),$(if $(wildcard $(s)/*.c),$(BUILD)/bin/jukebox-$(s)))
# Tools: tools/<name>.c -> jukebox-<name>.
TOOL_SRC  := $(wildcard tools/*.c)
TOOL_BINS := $(TOOL_SRC:tools/%.c=$(BUILD)/bin/jukebox-%)
# Tests: tests/test_*.c are standalone; tests/golden_*.c make the golden runner.
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
GOLDEN_SRC := $(wildcard tests/golden_*.c)
GOLDEN_BIN := $(BUILD)/tests/golden-runner

.PHONY: all test test-gpu check check-layers asan golden fuzz demo install clean deps
all: deps $(LIB) $(STAGE_BINS) $(TOOL_BINS) $(if $(filter 1,$(CUDA)),,$(EMU_LIB))

deps:
	@scripts/deps.sh build

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

$(LIB): $(COMMON_OBJ) $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/emu/%.o: %
	@mkdir -p $(dir $@)
	$(CXX) -x c++ $(EMU_CXXFLAGS) -c $< -o $@

$(EMU_LIB): $(EMU_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

.SECONDARY:
.SECONDEXPANSION:
# Static pattern rules: a plain pattern rule for stages would also match every tool
# (its wildcard is empty for a tool) and link a tool without its main. No '%' inside the
# expanded lists: make substitutes the stem there before the second expansion.
$(STAGE_BINS): $(BUILD)/bin/jukebox-%: $$(foreach f,$$(wildcard $$*/*.c),$(BUILD)/$$(basename $$f).o) \
		$(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(LIB) $(LDLIBS) -o $@

# jukebox-mkdataset renders with FluidSynth.
$(BUILD)/bin/jukebox-mkdataset: LDLIBS += -lfluidsynth
# jukebox-eval's musical figures (common/jb_music.c) use aubio's pitch and onset detectors.
$(BUILD)/bin/jukebox-eval $(BUILD)/tests/test_jb_music: LDLIBS += -laubio

# A tool is tools/<name>.c plus, optionally, tools/<name>/*.c (e.g. bench subcommands).
# jukebox-bench_matmul measures the bound with jukebox-bench's own bandwidth probe.
$(BUILD)/bin/jukebox-bench_matmul: $(BUILD)/tools/bench/common.o
$(TOOL_BINS): $(BUILD)/bin/jukebox-%: $(BUILD)/tools/%.o \
		$$(foreach f,$$(wildcard tools/$$*/*.c),$(BUILD)/$$(basename $$f).o) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# The CUDA tests: against the emulation (plain make) or the GPU (CUDA=1).
$(BUILD)/tests/test_cuda_%.o: CPPFLAGS += $(CUDA_TEST_CPPFLAGS)
$(BUILD)/tests/test_cuda_%: $(BUILD)/tests/test_cuda_%.o $(CUDA_TEST_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(CUDA_TEST_LIBS) $(LDLIBS) -lstdc++ -o $@

$(GOLDEN_BIN): $(GOLDEN_SRC:%.c=$(BUILD)/%.o) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(LIB) $(LDLIBS) -o $@

# The golden runner through the device code (tests/golden_device.h): the same checkers built
# with JB_HAVE_CUDA and linked like the CUDA tests (the emulation, or the GPU with CUDA=1); run
# with JB_GOLDEN_DEVICE=cuda on the vqvae, prior and pipeline cases by tests/run_tests.sh.
GOLDEN_CUDA_BIN := $(BUILD)/tests/golden-runner-cuda
$(BUILD)/tests/cuda/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CUDA_TEST_CPPFLAGS) $(CFLAGS) -c $< -o $@
$(GOLDEN_CUDA_BIN): $(GOLDEN_SRC:tests/%.c=$(BUILD)/tests/cuda/%.o) $(CUDA_TEST_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(filter %.o,$^) $(CUDA_TEST_LIBS) $(LDLIBS) -lstdc++ -o $@

test: all $(TEST_BINS) $(GOLDEN_BIN) $(GOLDEN_CUDA_BIN)
	@scripts/deps.sh test
	@scripts/check-layers.py $(LAYERS)
	@BUILD=$(BUILD) GOLDEN=$(GOLDEN) tests/run_tests.sh

check: test

# Every #include "..." under common/ points down a layer (README "Where things live").
check-layers:
	@scripts/check-layers.py $(LAYERS)

# For whoever has a GPU: everything built with nvcc into build-cuda/, the CUDA tests on the
# device (test_cuda_transformer prints device forward/step timings), the golden suite.
test-gpu:
	$(MAKE) CUDA=1 BUILD=build-cuda all $(patsubst tests/%.c,build-cuda/tests/%,$(wildcard tests/test_cuda_*.c)) \
		build-cuda/tests/golden-runner build-cuda/tests/golden-runner-cuda
	set -e; for t in $(patsubst tests/%.c,build-cuda/tests/%,$(wildcard tests/test_cuda_*.c)); do \
		JB_CUDA_TIMING=1 $$t; done
	build-cuda/tests/golden-runner $(GOLDEN)
	JB_GOLDEN_DEVICE=cuda build-cuda/tests/golden-runner-cuda $(GOLDEN) \
		$$(cd $(GOLDEN) && ls -d vqvae_* prior_* upsampler_* pipeline_* 2>/dev/null)

asan:
	JB_CI_MAY_SKIP="test_valgrind.sh test_jb_torch_oom" JB_TEST_TIME_SCALE=4 \
	    $(MAKE) BUILD=build-asan SAN=1 OPT=-O1 test

golden: all $(GOLDEN_BIN)
	$(GOLDEN_BIN) $(GOLDEN)

FUZZ_SECONDS ?= 60
fuzz:
	@BUILD=$(BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run_fuzz.sh

demo: all
	@scripts/deps.sh demo
	@BUILD=$(BUILD) pipelines/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/jukebox/pipelines
	install -m 755 $(STAGE_BINS) $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/
	if [ -f pipelines/jukebox ]; then install -m 755 pipelines/jukebox $(DESTDIR)$(PREFIX)/bin/; fi
	cp -r pipelines/. $(DESTDIR)$(PREFIX)/share/jukebox/pipelines/
	install -d $(DESTDIR)$(PREFIX)/share/jukebox/models/default
	install -m 644 models/default/*.safetensors $(wildcard models/default/*.md) \
		$(DESTDIR)$(PREFIX)/share/jukebox/models/default/
	install -m 755 pipelines/demo.sh $(DESTDIR)$(PREFIX)/bin/jukebox-demo
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	for u in pipelines/systemd/*.service; do \
		sed 's|@BINDIR@|$(PREFIX)/bin|' $$u > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); done

clean:
	rm -rf $(BUILD) build-asan build-cuda

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
