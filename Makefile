# Build: `make` -> build/moe.  `make test` -> whole suite, plain and under
# ASan+UBSan.  `make run` -> the demo (see README).
#
# Every .c under moe/ kernels/ coordinator/ worker/ goes into one static
# library; coordinator/main.c is the CLI entry point.  Files named *_avx2.c /
# *_avx512.c are the only ones compiled with SIMD flags: the binary runs on
# any x86-64 and picks its kernels at run time.

BUILD ?= build
SAN ?= 0
CC := mpicc
PROTOC_C ?= protoc-c

OPT ?= -O2
CFLAGS_BASE := -std=c11 -g -Wall -Wextra -Werror -D_GNU_SOURCE -pthread \
  -fno-strict-aliasing -Imoe -Ikernels -Icoordinator -Iworker -I$(BUILD)/proto
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS_SAN := -fsanitize=address,undefined
  OPT := -O1
endif
CFLAGS := $(OPT) $(CFLAGS_BASE)
LDLIBS := -lpcre2-8 -lcjson -lhwloc -lnuma -lprotobuf-c -lm -pthread

AVX2_FLAGS := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16

PROTO_SRC := $(wildcard proto/*.proto)
PROTO_C := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(PROTO_SRC))
PROTO_H := $(PROTO_C:.c=.h)

MAIN_SRC := coordinator/main.c
LIB_SRC := $(filter-out $(MAIN_SRC),$(wildcard moe/*.c kernels/*.c coordinator/*.c worker/*.c))
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(PROTO_C:.c=.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all test test-plain test-san run clean bench
# keep objects of test programs between runs
.SECONDARY:
all: $(BUILD)/moe $(TEST_BIN)

$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/proto
	$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/proto $<

$(BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c
	$(CC) $(OPT) -g -D_GNU_SOURCE -I$(BUILD)/proto $(if $(filter 1,$(SAN)),-fsanitize=address$(,)undefined) -c $< -o $@

$(BUILD)/obj/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/moe: $(BUILD)/obj/coordinator/main.o $(BUILD)/libmoe.a
	$(CC) $(LDFLAGS_SAN) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_SAN) -o $@ $^ $(LDLIBS)

# The whole suite: plain build, then the same tests under ASan + UBSan.
test: test-plain test-san

test-plain: all
	tests/run.sh $(BUILD)

test-san:
	$(MAKE) BUILD=build-san SAN=1 all
	tests/run.sh build-san

# The demo: a generated tiny DeepSeek-V3-architecture model (random weights),
# served by 3 MPI ranks (coordinator + stage + expert workers).
MODEL ?= $(BUILD)/models/tiny-Q4_K_M.gguf
RANKS ?= 3
PROMPT ?= The quick brown fox jumps over the lazy dog.
MPIRUN := mpirun --allow-run-as-root --oversubscribe --bind-to none -np $(RANKS)
run: $(BUILD)/moe
	@test -f $(MODEL) || { mkdir -p $(dir $(MODEL)) && $(BUILD)/moe mkmodel --preset tiny --type Q4_K_M -o $(MODEL); }
	$(BUILD)/moe info $(MODEL)
	$(MPIRUN) $(BUILD)/moe generate -m $(MODEL) -p "$(PROMPT)" -n 48 --temp 0.8 --seed 7 --stats

clean:
	rm -rf build build-san

, := ,
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
