# cython: language_level=3
# jacgeom's C-level API: one-sample kernels over raw pointers, callable without the GIL.
#
#     from jacgeom.cython_kernels cimport dmasked_rank, dmasked_rank_workspace
#
# Every function is noexcept nogil and allocates nothing: workspaces are the caller's (an
# array of doubles of the length the *_workspace function returns, for either precision).
# Strides count elements, not bytes (numpy's byte strides divided by the itemsize), and may
# be negative. A negative return value is a status code (the STATUS_* constants below; the
# Python dict jacgeom.cython_kernels.STATUS names them). Prefix d: float64, s: float32.
#
# Tolerances follow numpy.linalg.matrix_rank: tol (absolute) or rtol (relative to the
# largest singular value), NaN for "not given"; both NaN: rtol = max(k, n) eps of the dtype
# for k kept rows. The same functions are exported in __pyx_capi__ (numba:
# numba.extending.get_cython_function_address("jacgeom.cython_kernels", "dmasked_rank")).
# docs/cython.md has complete examples.

cdef enum:
    # Status codes, as csrc/include/jacgeom/capi.hpp returns them.
    STATUS_OK = 0
    STATUS_BAD_ARGUMENT = -1
    STATUS_NOT_REGISTERED = -2
    STATUS_TOO_LARGE = -3
    STATUS_WORKSPACE_SMALL = -4
    STATUS_NON_FINITE = -5
    STATUS_LAPACK_FAILED = -6

cdef enum:
    # Activation codes of the derivatives functions (jacgeom.activations.CODES).
    ACTIVATION_IDENTITY = 0
    ACTIVATION_RELU = 1
    ACTIVATION_LEAKY_RELU = 2
    ACTIVATION_SIGMOID = 3
    ACTIVATION_TANH = 4
    ACTIVATION_GELU = 5
    ACTIVATION_GELU_TANH = 6
    ACTIVATION_SOFTPLUS = 7
    ACTIVATION_ELU = 8
    ACTIVATION_SILU = 9

# out[i * out_stride] = phi'(z[i * z_stride]) for i < count. param: alpha of leaky_relu and
# elu, beta of softplus (ignored by the others). Returns 0, or STATUS_BAD_ARGUMENT.
cdef int dderivatives(int code, double param, const double* z, Py_ssize_t z_stride,
                      double* out, Py_ssize_t out_stride, Py_ssize_t count) noexcept nogil
cdef int sderivatives(int code, float param, const float* z, Py_ssize_t z_stride,
                      float* out, Py_ssize_t out_stride, Py_ssize_t count) noexcept nogil

# Workspace length (doubles) of [ds](log_)singular_values for a (rows, cols) matrix.
cdef Py_ssize_t dsingular_values_workspace(Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
cdef Py_ssize_t ssingular_values_workspace(Py_ssize_t rows, Py_ssize_t cols) noexcept nogil

# Singular values of A (A[i, j] = A[i * row_stride + j * col_stride]), descending, into
# s[k * s_stride], k < min(rows, cols). Returns 0 or a status.
cdef int dsingular_values(const double* A, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t row_stride, Py_ssize_t col_stride,
                          double* s, Py_ssize_t s_stride,
                          double* work, Py_ssize_t lwork) noexcept nogil
cdef int ssingular_values(const float* A, Py_ssize_t rows, Py_ssize_t cols,
                          Py_ssize_t row_stride, Py_ssize_t col_stride,
                          float* s, Py_ssize_t s_stride,
                          double* work, Py_ssize_t lwork) noexcept nogil
# The same, natural logarithms of the singular values (-inf for an exact zero).
cdef int dlog_singular_values(const double* A, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t row_stride, Py_ssize_t col_stride,
                              double* s, Py_ssize_t s_stride,
                              double* work, Py_ssize_t lwork) noexcept nogil
cdef int slog_singular_values(const float* A, Py_ssize_t rows, Py_ssize_t cols,
                              Py_ssize_t row_stride, Py_ssize_t col_stride,
                              float* s, Py_ssize_t s_stride,
                              double* work, Py_ssize_t lwork) noexcept nogil

# Workspace length (doubles) of [ds]masked_rank and [ds]row_scaled_rank for an (m, n) W.
cdef Py_ssize_t dmasked_rank_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil
cdef Py_ssize_t smasked_rank_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil

# rank(W[mask]) (mask[i * mask_stride] != 0 keeps row i), as jacgeom.masked_rank.
# row_gram: NULL, or W W^T in float64 ((m, m) C-contiguous, from [ds]row_gram), which
# makes masks keeping k <= n rows cheaper; the rank is the same. Returns the rank or a
# status (< 0).
cdef Py_ssize_t dmasked_rank(const double* W, Py_ssize_t m, Py_ssize_t n,
                             Py_ssize_t row_stride, Py_ssize_t col_stride,
                             const unsigned char* mask, Py_ssize_t mask_stride,
                             double tol, double rtol, const double* row_gram,
                             double* work, Py_ssize_t lwork) noexcept nogil
cdef Py_ssize_t smasked_rank(const float* W, Py_ssize_t m, Py_ssize_t n,
                             Py_ssize_t row_stride, Py_ssize_t col_stride,
                             const unsigned char* mask, Py_ssize_t mask_stride,
                             double tol, double rtol, const double* row_gram,
                             double* work, Py_ssize_t lwork) noexcept nogil

# The numerical rank of diag(scale) W (rows with scale == 0 dropped), as
# jacgeom.jacobian_rank with scale = phi'(z).
cdef Py_ssize_t drow_scaled_rank(const double* W, Py_ssize_t m, Py_ssize_t n,
                                 Py_ssize_t row_stride, Py_ssize_t col_stride,
                                 const double* scale, Py_ssize_t scale_stride,
                                 double tol, double rtol, const double* row_gram,
                                 double* work, Py_ssize_t lwork) noexcept nogil
cdef Py_ssize_t srow_scaled_rank(const float* W, Py_ssize_t m, Py_ssize_t n,
                                 Py_ssize_t row_stride, Py_ssize_t col_stride,
                                 const float* scale, Py_ssize_t scale_stride,
                                 double tol, double rtol, const double* row_gram,
                                 double* work, Py_ssize_t lwork) noexcept nogil

# Workspace length (doubles) of [ds]pullback_metric for an (m, n) W.
cdef Py_ssize_t dpullback_metric_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil
cdef Py_ssize_t spullback_metric_workspace(Py_ssize_t m, Py_ssize_t n) noexcept nogil

# The pullback metric of one sample, G = W^T diag(d)^2 W with d = phi'(z), into G ((n, n)
# C-contiguous), as jacgeom.pullback_metric. Returns 0 or a status.
cdef int dpullback_metric(const double* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                          Py_ssize_t col_stride, const double* d, Py_ssize_t d_stride,
                          double* G, double* work, Py_ssize_t lwork) noexcept nogil
cdef int spullback_metric(const float* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                          Py_ssize_t col_stride, const float* d, Py_ssize_t d_stride,
                          float* G, double* work, Py_ssize_t lwork) noexcept nogil

# out = W W^T in float64, (m, m) C-contiguous: the row Gram matrix of the rank functions.
cdef int drow_gram(const double* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                   Py_ssize_t col_stride, double* out) noexcept nogil
cdef int srow_gram(const float* W, Py_ssize_t m, Py_ssize_t n, Py_ssize_t row_stride,
                   Py_ssize_t col_stride, double* out) noexcept nogil

# The end-to-end Jacobian of a plain network (dense layers h_l = phi_l(W_l h_(l-1) + b_l);
# no layer normalisation, residual or kernel layers) at one input x, as
# jacgeom.Network.jacobian (bit for bit at one input, up to 32 units wide, where the Python
# API runs this code; to rounding for batches, summed in another order). depth >= 1 layers; widths: depth + 1 entries
# (n_0 inputs first). Layer l: W_l = weights[l], (widths[l+1], widths[l]), at
# W_l[i * weight_strides[2 l] + j * weight_strides[2 l + 1]]; b_l = biases[l] at
# b_l[i * bias_strides[l]] (biases NULL: no biases; bias_strides NULL: contiguous);
# activation codes[l] (ACTIVATION_*) with parameters[l] (alpha of leaky_relu and elu, beta
# of softplus; read by those only). Workspace lengths depend on the widths only.
cdef Py_ssize_t dnetwork_jacobian_workspace(Py_ssize_t depth,
                                            const Py_ssize_t* widths) noexcept nogil
cdef Py_ssize_t snetwork_jacobian_workspace(Py_ssize_t depth,
                                            const Py_ssize_t* widths) noexcept nogil

# J (n_L, n_0) at J[r * J_row_stride + c * J_col_stride]. Returns 0 or a status:
# STATUS_NON_FINITE where an entry of J is a NaN or an infinity (an input that is not
# finite, or a product beyond the float range; J is written as computed).
cdef int dnetwork_jacobian(Py_ssize_t depth, const Py_ssize_t* widths,
                           const double* const* weights, const Py_ssize_t* weight_strides,
                           const double* const* biases, const Py_ssize_t* bias_strides,
                           const int* codes, const double* parameters,
                           const double* x, Py_ssize_t x_stride,
                           double* J, Py_ssize_t J_row_stride, Py_ssize_t J_col_stride,
                           double* work, Py_ssize_t lwork) noexcept nogil
cdef int snetwork_jacobian(Py_ssize_t depth, const Py_ssize_t* widths,
                           const float* const* weights, const Py_ssize_t* weight_strides,
                           const float* const* biases, const Py_ssize_t* bias_strides,
                           const int* codes, const float* parameters,
                           const float* x, Py_ssize_t x_stride,
                           float* J, Py_ssize_t J_row_stride, Py_ssize_t J_col_stride,
                           double* work, Py_ssize_t lwork) noexcept nogil

# Workspace length (doubles) of [ds]network_log_singular_values.
cdef Py_ssize_t dnetwork_log_singular_values_workspace(Py_ssize_t depth,
                                                       const Py_ssize_t* widths) noexcept nogil
cdef Py_ssize_t snetwork_log_singular_values_workspace(Py_ssize_t depth,
                                                       const Py_ssize_t* widths) noexcept nogil

# Natural logs of the singular values of that J, descending, into s[k * s_stride],
# k < min(n_0, n_L): [ds]network_jacobian, then [ds]log_singular_values of J. Small values
# carry the SVD's absolute error (about eps sigma_max); jacgeom.Network.log_singular_values
# resolves them to relative accuracy. Returns 0 or a status.
cdef int dnetwork_log_singular_values(Py_ssize_t depth, const Py_ssize_t* widths,
                                      const double* const* weights,
                                      const Py_ssize_t* weight_strides,
                                      const double* const* biases,
                                      const Py_ssize_t* bias_strides,
                                      const int* codes, const double* parameters,
                                      const double* x, Py_ssize_t x_stride,
                                      double* s, Py_ssize_t s_stride,
                                      double* work, Py_ssize_t lwork) noexcept nogil
cdef int snetwork_log_singular_values(Py_ssize_t depth, const Py_ssize_t* widths,
                                      const float* const* weights,
                                      const Py_ssize_t* weight_strides,
                                      const float* const* biases,
                                      const Py_ssize_t* bias_strides,
                                      const int* codes, const float* parameters,
                                      const float* x, Py_ssize_t x_stride,
                                      float* s, Py_ssize_t s_stride,
                                      double* work, Py_ssize_t lwork) noexcept nogil
