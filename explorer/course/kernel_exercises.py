"""The course's kernel exercises (02-05): each is graded by explorer.lab.check_kernel."""
from .registry import kernel_exercise

kernel_exercise(
    "attention_forward", "Causal self-attention, forward",
    function="attention_forward(out, preatt, att, qkv, n_head)",
    hint="For each (b, head, t): scores q.k for t2 <= t into preatt (unscaled), a softmax of "
         "preatt / sqrt(hs) over t2 <= t into att (0 for t2 > t), then out = att @ v. Head h's "
         "q, k, v are channels h*hs:(h+1)*hs of the first, second and third C of qkv.")
kernel_exercise(
    "layernorm_backward", "Layernorm, backward",
    function="layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd)",
    hint="norm = (x - mean) * rstd and g = dout * weight; then dinp = rstd * (g - mean(g) - "
         "norm * mean(g * norm)) over each row, dweight = sum of dout * norm, dbias = sum of "
         "dout (over b and t). Set dweight and dbias to 0 before adding into them.")
kernel_exercise(
    "adamw_update", "AdamW, one step",
    function="adamw_update(params, grads, m, v, segments, decay, step, lr, beta1, beta2, eps, "
             "weight_decay, grad_scale)",
    hint="g = grads * grad_scale; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2; "
         "divide m and v by (1 - beta^step); params -= lr * (m_hat / (sqrt(v_hat) + eps) + "
         "wd * params), where wd is weight_decay only for the segments whose decay flag is set.")
kernel_exercise(
    "matmul_forward", "A parallel matmul",
    function="matmul_forward(out, inp, weight, bias)",
    hint="out[b, t, o] = bias[o] + sum_i inp[b, t, i] * weight[o, i]; bias may be None. Loop "
         "over the B*T rows with numba.prange (@numba.njit(parallel=True)): rows are independent.")
