/*
 * onnx.h - `mlpipe-train export --onnx`: an mlpipe model file
 * (docs/model-format.md) as an ONNX model (docs/onnx.md), for teams that
 * serve with Triton or ONNX Runtime.
 *
 * The ONNX file is protobuf; the subset it needs (varints, length-delimited
 * fields, one fixed-width float list) is written by hand in onnx.c, so the
 * trainer links no protobuf library.  Nothing here reads ONNX.
 */
#ifndef MLP_TRAIN_ONNX_H
#define MLP_TRAIN_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define MLP_ONNX_IR_VERSION 8
#define MLP_ONNX_OPSET 13

/*
 * Encodes shape + params as an ONNX ModelProto into a new buffer (the
 * caller frees *out): input "input" FP32 [batch, F]; per layer a Gemm
 * (transB=1, initializers "W<l>" [out, in] and "b<l>" [out]) and a Relu
 * after every layer but the last; outputs "logits" FP32 [batch, C] and
 * "class" INT64 [batch] (ArgMax over axis 1).  source_sha256, when not
 * NULL, is recorded as the metadata property mlpipe_sha256.  The shape
 * must be checked (mlp_shape_check).
 */
void mlp_onnx_encode(uint8_t **out, size_t *out_len, const struct mlp_shape *s, const float *params,
                     const char *source_sha256);

/*
 * Reads the model file at model_path and writes it as ONNX to out_path,
 * atomically (a temporary beside it, fsync, rename), so out_path is the
 * whole model or untouched.  When sha256_hex is not NULL it receives the
 * SHA-256 of the ONNX file (65 chars with NUL).  Returns 0, MLP_ENOTFOUND
 * or MLP_EINVAL (the model file is missing or not a valid model), or
 * MLP_EIO (out_path cannot be written); every message names the file.
 */
int mlp_onnx_export(const char *out_path, const char *model_path, char *sha256_hex);

#endif
