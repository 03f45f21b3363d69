//! Small ONNX models made in a test: a graph whose outputs are constant tensors (plus nothing
//! times the input, so the input is read), written as ONNX's protobuf by hand (no protobuf crate:
//! a handful of fields). For testing decoders on known outputs through ONNX Runtime.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(field: u32, wire: u8, out: &mut Vec<u8>) {
    varint(((field as u64) << 3) | wire as u64, out);
}

fn int(field: u32, v: i64, out: &mut Vec<u8>) {
    tag(field, 0, out);
    varint(v as u64, out);
}

fn bytes(field: u32, b: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn msg(field: u32, f: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) {
    let mut m = Vec::new();
    f(&mut m);
    bytes(field, &m, out);
}

/// ValueInfoProto of a float tensor with this shape.
fn value_info(name: &str, shape: &[i64], out: &mut Vec<u8>) {
    bytes(1, name.as_bytes(), out);
    msg(
        2,
        |t| {
            msg(
                1,
                |tt| {
                    int(1, 1, tt); // FLOAT
                    msg(
                        2,
                        |s| {
                            for &d in shape {
                                msg(1, |dim| int(1, d, dim), s);
                            }
                        },
                        tt,
                    );
                },
                t,
            )
        },
        out,
    );
}

fn node(inputs: &[&str], output: &str, op: &str, attrs: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) {
    for i in inputs {
        bytes(1, i.as_bytes(), out);
    }
    bytes(2, output.as_bytes(), out);
    bytes(3, output.as_bytes(), out);
    bytes(4, op.as_bytes(), out);
    attrs(out);
}

/// An ONNX model (opset 13) with a float input `input_name` of `input_shape` and outputs `(name,
/// shape, value)`, each equal to its value whatever the input.
pub fn constant_outputs(input_name: &str, input_shape: &[i64], outputs: &[(&str, &[i64], &[f32])]) -> Vec<u8> {
    let mut m = Vec::new();
    int(1, 8, &mut m); // ir_version
    msg(
        8,
        |o| {
            bytes(1, b"", o);
            int(2, 13, o);
        },
        &mut m,
    );
    msg(
        7,
        |g| {
            // sum = ReduceSum(input) (keepdims 0: a scalar); zero = sum * 0; out_k = const_k + zero
            msg(
                1,
                |n| {
                    node(
                        &[input_name],
                        "sum",
                        "ReduceSum",
                        |a| {
                            msg(
                                5,
                                |at| {
                                    bytes(1, b"keepdims", at);
                                    int(3, 0, at);
                                    int(20, 2, at); // AttributeType INT
                                },
                                a,
                            )
                        },
                        n,
                    )
                },
                g,
            );
            msg(1, |n| node(&["sum", "zero_c"], "zero", "Mul", |_| {}, n), g);
            for (k, (name, _, _)) in outputs.iter().enumerate() {
                let value = format!("value{k}");
                msg(1, |n| node(&[value.as_str(), "zero"], name, "Add", |_| {}, n), g);
            }
            bytes(2, b"test", g);
            let tensor = |name: &str, dims: &[i64], data: &[f32], t: &mut Vec<u8>| {
                for &d in dims {
                    int(1, d, t);
                }
                int(2, 1, t); // FLOAT
                bytes(8, name.as_bytes(), t);
                let raw: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
                bytes(9, &raw, t);
            };
            for (k, (_, shape, value)) in outputs.iter().enumerate() {
                msg(5, |t| tensor(&format!("value{k}"), shape, value, t), g);
            }
            msg(5, |t| tensor("zero_c", &[], &[0.0], t), g);
            msg(11, |v| value_info(input_name, input_shape, v), g);
            for (name, shape, _) in outputs {
                msg(12, |v| value_info(name, shape, v), g);
            }
        },
        &mut m,
    );
    m
}
