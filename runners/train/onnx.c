/*
 * onnx.c - an mlpipe model as an ONNX ModelProto (onnx.h, docs/onnx.md).
 *
 * The protobuf wire format is written by hand over one growable buffer:
 * a field is a tag (field number << 3 | wire type) then a varint (wire
 * type 0) or a varint length and that many bytes (wire type 2).  A nested
 * message's length is known only once it is written, so pb_begin() notes
 * where its content starts and pb_end() shifts the content up by the
 * length's size and writes the length in front.  Every byte moves once
 * per nesting level (the weights: twice, tensor and graph) within the one
 * buffer, which is sized for the weights up front: a model of
 * MLP_MODEL_MAX_PARAMS floats (1 GiB) needs about 1 GiB more, not several.
 *
 * Field numbers are those of onnx/onnx.proto (IR version 8).  The file is
 * the same bytes on every host: floats are written little-endian.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/crypto.h"
#include "base/error.h"
#include "base/util.h"
#include "onnx.h"

/* Wire types. */
enum { PB_VARINT = 0, PB_LEN = 2 };

/* ONNX enums (onnx.proto): TensorProto.DataType, AttributeProto.AttributeType. */
enum { ONNX_FLOAT = 1, ONNX_INT64 = 7 };
enum { ONNX_ATTR_INT = 2 };

/* Field numbers, by message. */
enum {
	MODEL_IR_VERSION = 1,
	MODEL_PRODUCER_NAME = 2,
	MODEL_PRODUCER_VERSION = 3,
	MODEL_DOC_STRING = 6,
	MODEL_GRAPH = 7,
	MODEL_OPSET_IMPORT = 8,
	MODEL_METADATA_PROPS = 14,
	OPSET_DOMAIN = 1,
	OPSET_VERSION = 2,
	ENTRY_KEY = 1,
	ENTRY_VALUE = 2,
	GRAPH_NODE = 1,
	GRAPH_NAME = 2,
	GRAPH_INITIALIZER = 5,
	GRAPH_DOC_STRING = 10,
	GRAPH_INPUT = 11,
	GRAPH_OUTPUT = 12,
	NODE_INPUT = 1,
	NODE_OUTPUT = 2,
	NODE_NAME = 3,
	NODE_OP_TYPE = 4,
	NODE_ATTRIBUTE = 5,
	ATTR_NAME = 1,
	ATTR_I = 3,
	ATTR_TYPE = 20,
	TENSOR_DIMS = 1,
	TENSOR_DATA_TYPE = 2,
	TENSOR_NAME = 8,
	TENSOR_RAW_DATA = 9,
	VALUE_INFO_NAME = 1,
	VALUE_INFO_TYPE = 2,
	TYPE_TENSOR_TYPE = 1,
	TYPE_TENSOR_ELEM_TYPE = 1,
	TYPE_TENSOR_SHAPE = 2,
	SHAPE_DIM = 1,
	DIM_VALUE = 1,
	DIM_PARAM = 2,
};

/* --- protobuf writer -------------------------------------------------------- */

/* Encodes v as a varint into bytes; returns how many it took (1 to 10). */
static size_t varint_encode(uint8_t bytes[10], uint64_t v)
{
	size_t n = 0;

	do {
		bytes[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			bytes[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

static void pb_varint(struct mlp_buf *b, uint64_t v)
{
	uint8_t bytes[10];

	mlp_buf_add(b, bytes, varint_encode(bytes, v));
}

static void pb_tag(struct mlp_buf *b, int field, int wire)
{
	pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire);
}

/* int64 and int32 fields: negative values would be ten-byte varints; ours
 * are never negative. */
static void pb_int(struct mlp_buf *b, int field, uint64_t v)
{
	pb_tag(b, field, PB_VARINT);
	pb_varint(b, v);
}

static void pb_string(struct mlp_buf *b, int field, const char *s)
{
	size_t len = strlen(s);

	pb_tag(b, field, PB_LEN);
	pb_varint(b, len);
	mlp_buf_add(b, s, len);
}

/* Starts a nested message in field; returns where its content starts. */
static size_t pb_begin(struct mlp_buf *b, int field)
{
	pb_tag(b, field, PB_LEN);
	return b->len;
}

/* Ends the nested message whose content starts at start: puts its length
 * in front of it (the buffer grows by the length's size, the content moves
 * up by as much). */
static void pb_end(struct mlp_buf *b, size_t start)
{
	size_t content = b->len - start;
	uint8_t len[10];
	size_t k = varint_encode(len, content);

	mlp_buf_add(b, len, k); /* room at the end; overwritten by the move */
	memmove(b->data + start + k, b->data + start, content);
	memcpy(b->data + start, len, k);
}

/* n floats as a bytes field, little-endian float32. */
static void pb_floats_raw(struct mlp_buf *b, int field, const float *v, size_t n)
{
	uint8_t chunk[4096];

	pb_tag(b, field, PB_LEN);
	pb_varint(b, 4 * (uint64_t)n);
	while (n > 0) {
		size_t m = n < sizeof(chunk) / 4 ? n : sizeof(chunk) / 4;

		for (size_t i = 0; i < m; i++) {
			uint32_t u;

			memcpy(&u, &v[i], 4);
			chunk[4 * i] = (uint8_t)u;
			chunk[4 * i + 1] = (uint8_t)(u >> 8);
			chunk[4 * i + 2] = (uint8_t)(u >> 16);
			chunk[4 * i + 3] = (uint8_t)(u >> 24);
		}
		mlp_buf_add(b, chunk, 4 * m);
		v += m;
		n -= m;
	}
}

/* --- the graph ---------------------------------------------------------------- */

/* A ValueInfoProto: a tensor of elem_type with dimensions "batch" and,
 * when width > 0, width. */
static void put_value_info(struct mlp_buf *b, int field, const char *name, int elem_type, int width)
{
	size_t info = pb_begin(b, field);
	size_t type, tensor, shape, dim;

	pb_string(b, VALUE_INFO_NAME, name);
	type = pb_begin(b, VALUE_INFO_TYPE);
	tensor = pb_begin(b, TYPE_TENSOR_TYPE);
	pb_int(b, TYPE_TENSOR_ELEM_TYPE, (uint64_t)elem_type);
	shape = pb_begin(b, TYPE_TENSOR_SHAPE);
	dim = pb_begin(b, SHAPE_DIM);
	pb_string(b, DIM_PARAM, "batch");
	pb_end(b, dim);
	if (width > 0) {
		dim = pb_begin(b, SHAPE_DIM);
		pb_int(b, DIM_VALUE, (uint64_t)width);
		pb_end(b, dim);
	}
	pb_end(b, shape);
	pb_end(b, tensor);
	pb_end(b, type);
	pb_end(b, info);
}

/* A float32 initializer of one or two dimensions (rows 0: one). */
static void put_initializer(struct mlp_buf *b, const char *name, const float *v, int rows, int cols)
{
	size_t tensor = pb_begin(b, GRAPH_INITIALIZER);
	size_t n = (size_t)cols * (size_t)(rows > 0 ? rows : 1);

	if (rows > 0)
		pb_int(b, TENSOR_DIMS, (uint64_t)rows);
	pb_int(b, TENSOR_DIMS, (uint64_t)cols);
	pb_int(b, TENSOR_DATA_TYPE, ONNX_FLOAT);
	pb_string(b, TENSOR_NAME, name);
	pb_floats_raw(b, TENSOR_RAW_DATA, v, n);
	pb_end(b, tensor);
}

static void put_int_attribute(struct mlp_buf *b, const char *name, uint64_t v)
{
	size_t attr = pb_begin(b, NODE_ATTRIBUTE);

	pb_string(b, ATTR_NAME, name);
	pb_int(b, ATTR_I, v);
	pb_int(b, ATTR_TYPE, ONNX_ATTR_INT);
	pb_end(b, attr);
}

/* Starts a NodeProto with these inputs and one output; the caller adds
 * its attributes and ends it with pb_end(). */
static size_t begin_node(struct mlp_buf *b, const char *op, const char *name,
                         const char *const *inputs, size_t ninputs, const char *output)
{
	size_t node = pb_begin(b, GRAPH_NODE);

	for (size_t i = 0; i < ninputs; i++)
		pb_string(b, NODE_INPUT, inputs[i]);
	pb_string(b, NODE_OUTPUT, output);
	pb_string(b, NODE_NAME, name);
	pb_string(b, NODE_OP_TYPE, op);
	return node;
}

/* The GraphProto: Gemm (+ Relu) per layer, ArgMax, the initializers, the
 * inputs and outputs. */
static void put_graph(struct mlp_buf *b, const struct mlp_shape *s, const float *params)
{
	size_t graph = pb_begin(b, MODEL_GRAPH);
	int nlayers = s->nsizes - 1;
	char prev[32] = "input";

	for (int l = 1; l <= nlayers; l++) {
		char w[32], bias[32], name[32], out[32];
		const char *in[3] = {prev, w, bias};
		size_t node;

		snprintf(w, sizeof(w), "W%d", l);
		snprintf(bias, sizeof(bias), "b%d", l);
		snprintf(name, sizeof(name), "gemm%d", l);
		snprintf(out, sizeof(out), "%s", l == nlayers ? "logits" : name);
		node = begin_node(b, "Gemm", name, in, 3, out);
		put_int_attribute(b, "transB", 1);
		pb_end(b, node);
		if (l < nlayers) {
			const char *relu_in[1] = {out};

			snprintf(prev, sizeof(prev), "relu%d", l);
			pb_end(b, begin_node(b, "Relu", prev, relu_in, 1, prev));
		}
	}
	{
		const char *argmax_in[1] = {"logits"};
		size_t node = begin_node(b, "ArgMax", "argmax", argmax_in, 1, "class");

		put_int_attribute(b, "axis", 1);
		put_int_attribute(b, "keepdims", 0);
		pb_end(b, node);
	}
	pb_string(b, GRAPH_NAME, "mlpipe_mlp");
	for (int l = 1; l <= nlayers; l++) {
		char name[32];

		snprintf(name, sizeof(name), "W%d", l);
		put_initializer(b, name, params + mlp_shape_weight_offset(s, l), s->sizes[l],
		                s->sizes[l - 1]);
		snprintf(name, sizeof(name), "b%d", l);
		put_initializer(b, name, params + mlp_shape_bias_offset(s, l), 0, s->sizes[l]);
	}
	pb_string(b, GRAPH_DOC_STRING,
	          "input: features as the trainer sees them (pixels as byte/255); logits: "
	          "class scores (softmax gives probabilities); class: the arg-max");
	put_value_info(b, GRAPH_INPUT, "input", ONNX_FLOAT, s->sizes[0]);
	put_value_info(b, GRAPH_OUTPUT, "logits", ONNX_FLOAT, s->sizes[nlayers]);
	put_value_info(b, GRAPH_OUTPUT, "class", ONNX_INT64, 0);
	pb_end(b, graph);
}

static void put_metadata(struct mlp_buf *b, const char *key, const char *value)
{
	size_t entry = pb_begin(b, MODEL_METADATA_PROPS);

	pb_string(b, ENTRY_KEY, key);
	pb_string(b, ENTRY_VALUE, value);
	pb_end(b, entry);
}

void mlp_onnx_encode(uint8_t **out, size_t *out_len, const struct mlp_shape *s, const float *params,
                     const char *source_sha256)
{
	struct mlp_buf b = {0};
	char shape[512];
	char *doc;
	size_t opset;

	/* The weights are nearly all of it: one allocation, no regrowth. */
	xgrow((void **)&b.data, &b.cap, 4 * mlp_shape_nparams(s) + 4096, 1);
	mlp_shape_format(shape, sizeof(shape), s);
	pb_int(&b, MODEL_IR_VERSION, MLP_ONNX_IR_VERSION);
	pb_string(&b, MODEL_PRODUCER_NAME, "mlpipe-train");
	pb_string(&b, MODEL_PRODUCER_VERSION, PACKAGE_VERSION);
	doc = xasprintf("mlpipe MLP classifier, layers %s (features, hidden..., classes): "
	                "Gemm per layer, Relu between layers, ArgMax for the class",
	                shape);
	pb_string(&b, MODEL_DOC_STRING, doc);
	free(doc);
	put_graph(&b, s, params);
	opset = pb_begin(&b, MODEL_OPSET_IMPORT);
	pb_string(&b, OPSET_DOMAIN, "");
	pb_int(&b, OPSET_VERSION, MLP_ONNX_OPSET);
	pb_end(&b, opset);
	put_metadata(&b, "mlpipe_layers", shape);
	if (source_sha256)
		put_metadata(&b, "mlpipe_sha256", source_sha256);
	*out_len = b.len;
	*out = (uint8_t *)mlp_buf_detach(&b);
}

/* True when a and b name the same existing file. */
static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

int mlp_onnx_export(const char *out_path, const char *model_path, char *sha256_hex)
{
	/* A model file's largest size (docs/model-format.md): 24 + 4n + 4P. */
	size_t max = 24 + 4 * (size_t)MLP_MODEL_MAX_SIZES + 4 * (size_t)MLP_MODEL_MAX_PARAMS;
	char source_sha256[MLP_SHA256_HEX_LEN + 1];
	struct mlp_shape s;
	float *params = NULL;
	uint8_t *onnx = NULL;
	size_t len, onnx_len;
	char *img = NULL;
	int rc;

	/* One read: the digest recorded is that of the bytes converted. */
	rc = mlp_read_file(&img, &len, model_path, max);
	if (rc != 0) {
		rc = rc == MLP_ENOTFOUND ? rc : MLP_EINVAL; /* unreadable: bad input */
		goto done;
	}
	rc = mlp_model_decode(&s, &params, (const uint8_t *)img, len, model_path);
	if (rc != 0)
		goto done;
	if (same_file(out_path, model_path)) {
		mlp_error_set("%s: is the model file itself; name another file for the ONNX model",
		              out_path);
		rc = MLP_EINVAL;
		goto done;
	}
	mlp_sha256_hex(source_sha256, img, len);
	mlp_onnx_encode(&onnx, &onnx_len, &s, params, source_sha256);
	rc = mlp_write_file_atomic(out_path, onnx, onnx_len, 0644);
	if (rc != 0) {
		char *msg = xasprintf("%s: not written (%s)", out_path, mlp_error_last());

		mlp_error_set("%s", msg);
		free(msg);
		goto done;
	}
	if (sha256_hex)
		mlp_sha256_hex(sha256_hex, onnx, onnx_len);
done:
	free(onnx);
	free(params);
	free(img);
	return rc;
}
