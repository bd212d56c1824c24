#ifndef MOE_MODEL_STATS_H
#define MOE_MODEL_STATS_H

#include <stdint.h>

#include "model.h"

/* Attention weights of a layer (norms included). */
uint64_t moe_layer_attn_bytes(const moe_model *m, int il);
/* One routed expert of a layer (gate + up + down); 0 for dense layers. */
uint64_t moe_layer_expert_bytes(const moe_model *m, int il);
/* Dense FFN, router and shared experts of a layer. */
uint64_t moe_layer_dense_bytes(const moe_model *m, int il);
/* All weights. */
uint64_t moe_weight_bytes(const moe_model *m);
/* Weights read to decode one token: everything but the unused experts and
 * all but one embedding row. */
uint64_t moe_decode_bytes_per_token(const moe_model *m);
/* F32 compressed KV cache bytes per position of one sequence, all layers. */
uint64_t moe_kv_bytes_per_position(const moe_hparams *hp);

#endif
