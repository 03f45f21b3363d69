//! A model session run through ONNX Runtime's C API, so that the hot path makes no Rust heap
//! allocation per frame: the input tensor is bound once to our own buffer (again only when its
//! shape or address changes), output names are C strings made at load, and outputs are read
//! in place. (`ort`'s `Session::run` allocates an `Arc` per input and per output on every run.)
//! ONNX Runtime's own memory comes from its arena, outside Rust's allocator.

use std::ffi::{CStr, CString, c_char};
use std::ptr::{NonNull, null_mut};

use anyhow::{Result, anyhow, bail};
use ort::AsPointer;
use ort::session::Session;
use ort::sys::{ONNXTensorElementDataType, OrtAllocatorType, OrtMemType, OrtMemoryInfo, OrtStatusPtr, OrtValue};

fn check(st: OrtStatusPtr) -> Result<()> {
    if st.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status returned by the API; its message lives until the status is released.
    let msg = unsafe { CStr::from_ptr((api.GetErrorMessage)(st.0)).to_string_lossy().into_owned() };
    // SAFETY: released once, here.
    unsafe { (api.ReleaseStatus)(st.0) };
    bail!("ONNX Runtime: {msg}")
}

/// The input tensor bound to `Runner::input`: its address and shape when it was made.
struct Bound {
    value: NonNull<OrtValue>,
    addr: *const f32,
    shape: [i64; 4],
}

pub struct Runner {
    pub session: Session,
    input_name: CString,
    output_names: Vec<CString>,
    output_ptrs: Vec<*const c_char>,
    /// The model input, written by the caller before [`run`](Self::run).
    pub input: Vec<f32>,
    bound: Option<Bound>,
    outputs: Vec<*mut OrtValue>,
    memory: NonNull<OrtMemoryInfo>,
}

// SAFETY: the raw pointers are ONNX Runtime objects owned by this value alone (never shared), and
// ONNX Runtime values may be used from any thread; `&mut self` serialises every use.
unsafe impl Send for Runner {}

impl Runner {
    pub fn new(session: Session, input: &str, outputs: &[String]) -> Result<Runner> {
        let c = |s: &str| CString::new(s).map_err(|_| anyhow!("tensor name {s:?} contains a NUL byte"));
        let output_names = outputs.iter().map(|s| c(s)).collect::<Result<Vec<_>>>()?;
        let output_ptrs = output_names.iter().map(|s| s.as_ptr()).collect();
        let mut memory = null_mut();
        // SAFETY: `memory` is written by the call and released in Drop.
        check(unsafe {
            (ort::api().CreateCpuMemoryInfo)(
                OrtAllocatorType::OrtArenaAllocator,
                OrtMemType::OrtMemTypeDefault,
                &mut memory,
            )
        })?;
        Ok(Runner {
            session,
            input_name: c(input)?,
            output_names,
            output_ptrs,
            input: Vec::new(),
            bound: None,
            outputs: vec![null_mut(); outputs.len()],
            memory: NonNull::new(memory).ok_or_else(|| anyhow!("ONNX Runtime returned no memory info"))?,
        })
    }

    fn release_outputs(&mut self) {
        for v in &mut self.outputs {
            if !v.is_null() {
                // SAFETY: made by Run, released once (the slot is nulled).
                unsafe { (ort::api().ReleaseValue)(*v) };
                *v = null_mut();
            }
        }
    }

    /// Runs the model on `input` with this NCHW/NHWC `shape` (its element count must equal
    /// `input.len()`). Outputs are then read with [`output`](Self::output).
    pub fn run(&mut self, shape: [usize; 4]) -> Result<()> {
        let api = ort::api();
        let shape = shape.map(|d| d as i64);
        if shape.iter().product::<i64>() as usize != self.input.len() {
            bail!("input shape {shape:?} does not match {} values", self.input.len());
        }
        let addr = self.input.as_ptr();
        if self.bound.as_ref().is_none_or(|b| b.addr != addr || b.shape != shape) {
            if let Some(b) = self.bound.take() {
                // SAFETY: made below, released once.
                unsafe { (api.ReleaseValue)(b.value.as_ptr()) };
            }
            let mut v = null_mut();
            // SAFETY: the tensor borrows `input`'s buffer; it is remade whenever the buffer's address
            // or the shape changes, and released before the buffer is dropped (field order / Drop).
            check(unsafe {
                (api.CreateTensorWithDataAsOrtValue)(
                    self.memory.as_ptr(),
                    self.input.as_mut_ptr().cast(),
                    self.input.len() * size_of::<f32>(),
                    shape.as_ptr(),
                    shape.len(),
                    ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
                    &mut v,
                )
            })?;
            let value = NonNull::new(v).ok_or_else(|| anyhow!("ONNX Runtime returned no input tensor"))?;
            self.bound = Some(Bound { value, addr, shape });
        }
        self.release_outputs();
        let input = self.bound.as_ref().expect("bound").value.as_ptr() as *const OrtValue;
        let name = self.input_name.as_ptr();
        // SAFETY: names and values are live for the call; ONNX Runtime fills `outputs` with new
        // values that we release (release_outputs / Drop). Run is not called concurrently on one
        // session (`&mut self`).
        check(unsafe {
            (api.Run)(
                self.session.ptr() as *mut _,
                std::ptr::null(),
                &name,
                &input,
                1,
                self.output_ptrs.as_ptr(),
                self.output_ptrs.len(),
                self.outputs.as_mut_ptr(),
            )
        })
    }

    /// Output `k` of the last run, as f32 values.
    pub fn output(&self, k: usize) -> Result<&[f32]> {
        let api = ort::api();
        let v = *self.outputs.get(k).ok_or_else(|| anyhow!("no output {k}"))?;
        if v.is_null() {
            bail!("output {:?} was not produced", self.output_names[k]);
        }
        let (mut info, mut n, mut ty, mut data) =
            (null_mut(), 0usize, ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED, null_mut());
        // SAFETY: `v` is a live output value; `info` is released right after use.
        unsafe {
            check((api.GetTensorTypeAndShape)(v, &mut info))?;
            let r = check((api.GetTensorShapeElementCount)(info, &mut n))
                .and_then(|_| check((api.GetTensorElementType)(info, &mut ty)));
            (api.ReleaseTensorTypeAndShapeInfo)(info);
            r?;
            if ty != ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT {
                bail!("output {:?} is not float32", self.output_names[k]);
            }
            check((api.GetTensorMutableData)(v, &mut data))?;
        }
        if n == 0 {
            return Ok(&[]);
        }
        // SAFETY: ONNX Runtime owns `n` f32 values at `data` until the value is released, which
        // needs `&mut self`, so not while this borrow lives.
        Ok(unsafe { std::slice::from_raw_parts(data as *const f32, n) })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.release_outputs();
        let api = ort::api();
        if let Some(b) = self.bound.take() {
            // SAFETY: released once; `input` is still alive here (fields drop after this).
            unsafe { (api.ReleaseValue)(b.value.as_ptr()) };
        }
        // SAFETY: made in `new`, released once.
        unsafe { (api.ReleaseMemoryInfo)(self.memory.as_ptr()) };
    }
}
