#include <xgrad/io/safetensors.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>
#include <utility>

#include <nlohmann/json.hpp>
#include <xtensor/xnoalias.hpp>

#include <xgrad/io/atomic_file.hpp>

namespace xgrad {

namespace {

using nlohmann::json;

constexpr const char* kBatchCount = "num_batches_tracked";
// The reference implementation's bound on the header (100 MB).
constexpr std::uint64_t kMaxHeader = 100'000'000;
// The reader's name in its error messages, from every step of reading.
constexpr const char* kReader = "read_safetensors";

[[noreturn]] void fail(const char* function, const std::string& path, const std::string& what) {
    throw std::runtime_error(std::string("xgrad::") + function + ": " + path + ": " + what);
}

std::string tensor_label(const std::string& name) { return "tensor '" + name + "'"; }

std::size_t item_size(const std::string& dtype) {
    if (dtype == "F32") return 4;
    if (dtype == "F16" || dtype == "BF16") return 2;
    if (dtype == "F64" || dtype == "I64") return 8;
    return 0;
}

std::uint64_t read_le(const unsigned char* p, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    return v;
}

float bits_to_float(std::uint32_t bits) {
    float f = 0.f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h >> 15) << 31;
    const std::uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu;
    if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
        const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));
    return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Where a layer keeps its weight under PyTorch's name: "weight_orig" beside
// spectral norm's "weight_u".
struct Named {
    std::string file_name;
    Var var;
};

std::vector<Named> state_dict(const Module& module, std::vector<std::string>* batch_counts) {
    NamedVars parameters = module.named_parameters(), buffers = module.named_buffers();
    std::set<std::string> names;
    for (const auto& [name, v] : buffers) names.insert(name);
    std::vector<Named> out;
    for (const auto& [name, v] : parameters) {
        const bool spectral = name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0 && names.count(name + "_u") > 0;
        out.push_back({spectral ? name + "_orig" : name, v});
    }
    const std::string running_var = "running_var";
    for (const auto& [name, v] : buffers) {
        out.push_back({name, v});
        if (batch_counts && name.size() >= running_var.size() &&
            name.compare(name.size() - running_var.size(), running_var.size(), running_var) == 0) {
            batch_counts->push_back(name.substr(0, name.size() - running_var.size()) + kBatchCount);
        }
    }
    return out;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(kReader, path, std::string("cannot open the file (") + std::strerror(errno) + ")");
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) fail(kReader, path, "read error");
    return bytes;
}

// A header value as a size, or an error naming the tensor.
std::uint64_t as_size(const json& v, const std::string& path, const std::string& name, const char* field) {
    if (!v.is_number_unsigned()) {
        if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
        fail(kReader, path, tensor_label(name) + ": " + field + " holds " + v.dump() + " (expected integers >= 0)");
    }
    return v.get<std::uint64_t>();
}

// One tensor's entry of the header, checked against the `data_size` bytes of
// data: its dtype and shape in t, its bytes [begin, end) of the data.
struct EntryBytes {
    std::uint64_t begin, end, count;
};
EntryBytes read_entry(const std::string& path, const std::string& name, const json& entry, std::uint64_t data_size,
                      SafetensorsTensor& t) {
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets")) {
        fail(kReader, path,
             tensor_label(name) + ": " + entry.dump() + " (expected an object with dtype, shape and data_offsets)");
    }
    const json& dtype = entry["dtype"];
    const json& shape = entry["shape"];
    const json& offsets = entry["data_offsets"];
    if (!dtype.is_string()) fail(kReader, path, tensor_label(name) + ": dtype " + dtype.dump() + " (expected a string)");
    t.dtype = dtype.get<std::string>();
    const std::size_t item = item_size(t.dtype);
    if (item == 0) fail(kReader, path, tensor_label(name) + ": dtype " + t.dtype + " (expected F32, F16, BF16, F64 or I64)");
    if (!shape.is_array()) fail(kReader, path, tensor_label(name) + ": shape " + shape.dump() + " (expected an array)");
    if (!offsets.is_array() || offsets.size() != 2) {
        fail(kReader, path, tensor_label(name) + ": data_offsets " + offsets.dump() + " (expected [begin, end])");
    }
    std::uint64_t count = 1;
    for (const json& d : shape) {
        const std::uint64_t extent = as_size(d, path, name, "shape");
        if (extent != 0 && count > std::numeric_limits<std::uint64_t>::max() / 8 / extent) {
            fail(kReader, path, tensor_label(name) + ": shape " + shape.dump() + " is too large");
        }
        count *= extent;
        t.shape.push_back(static_cast<std::size_t>(extent));
    }
    const std::uint64_t begin = as_size(offsets[0], path, name, "data_offsets");
    const std::uint64_t end = as_size(offsets[1], path, name, "data_offsets");
    if (begin > end || end > data_size) {
        fail(kReader, path,
             tensor_label(name) + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] outside the " +
                 std::to_string(data_size) + " bytes of data (truncated?)");
    }
    if (end - begin != count * item) {
        fail(kReader, path,
             tensor_label(name) + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                 std::to_string(end - begin) + " bytes but " + t.dtype + " " + shape.dump() + " needs " +
                 std::to_string(count * item));
    }
    return {begin, end, count};
}

// t's `count` values from the little-endian bytes at p, in its dtype: into
// t.integers for I64, else into t.values as float.
void decode_values(const std::string& path, const std::string& name, const unsigned char* p, std::size_t count,
                   SafetensorsTensor& t) {
    if (t.dtype == "I64") {
        t.integers.resize(count);
        for (std::size_t i = 0; i < count; ++i) t.integers[i] = static_cast<std::int64_t>(read_le(p + 8 * i, 8));
        t.values = Tensor::from_shape({0});
        return;
    }
    const std::size_t item = item_size(t.dtype);
    t.values = Tensor::from_shape(t.shape);
    float* v = t.values.data();
    for (std::size_t i = 0; i < count; ++i) {
        const unsigned char* e = p + item * i;
        if (t.dtype == "F32") {
            v[i] = bits_to_float(static_cast<std::uint32_t>(read_le(e, 4)));
        } else if (t.dtype == "F16") {
            v[i] = half_to_float(static_cast<std::uint16_t>(read_le(e, 2)));
        } else if (t.dtype == "BF16") {
            v[i] = bits_to_float(static_cast<std::uint32_t>(read_le(e, 2)) << 16);
        } else {  // F64
            double d = 0;
            const std::uint64_t b = read_le(e, 8);
            std::memcpy(&d, &b, sizeof d);
            v[i] = static_cast<float>(d);
            if (std::isfinite(d) && !std::isfinite(v[i])) {
                fail(kReader, path,
                     tensor_label(name) + ": F64 value " + std::to_string(d) + " at " + std::to_string(i) + " overflows float");
            }
        }
    }
}

// The header's JSON object, after the checks on its length; data_size gets
// the number of bytes after it.
json read_header(const std::string& path, const std::string& bytes, std::uint64_t& data_size) {
    if (bytes.size() < 8) {
        fail(kReader, path, "truncated: " + std::to_string(bytes.size()) + " bytes (expected at least 8, the header's length)");
    }
    const std::uint64_t header_size = read_le(reinterpret_cast<const unsigned char*>(bytes.data()), 8);
    if (header_size > bytes.size() - 8) {
        fail(kReader, path,
             "the header's length " + std::to_string(header_size) + " is larger than the file's " +
                 std::to_string(bytes.size() - 8) + " bytes after it");
    }
    if (header_size > kMaxHeader) fail(kReader, path, "header of " + std::to_string(header_size) + " bytes (at most 100 MB)");
    json header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_size), nullptr, false);
    if (header.is_discarded()) fail(kReader, path, "the header is not valid JSON");
    if (!header.is_object())
        fail(kReader, path, "the header is " + std::string(header.type_name()) + " (expected a JSON object)");
    data_size = bytes.size() - 8 - header_size;
    return header;
}

}  // namespace

std::map<std::string, SafetensorsTensor> read_safetensors(const std::string& path) {
    const std::string bytes = read_all(path);
    std::uint64_t data_size = 0;
    const json header = read_header(path, bytes, data_size);
    const auto* data = reinterpret_cast<const unsigned char*>(bytes.data()) + (bytes.size() - data_size);

    std::map<std::string, SafetensorsTensor> out;
    std::vector<std::pair<std::pair<std::uint64_t, std::uint64_t>, std::string>> ranges;
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) {
                fail(kReader, path, "__metadata__ is " + std::string(entry.type_name()) + " (expected an object)");
            }
            continue;
        }
        SafetensorsTensor t;
        const EntryBytes at = read_entry(path, name, entry, data_size, t);
        ranges.push_back({{at.begin, at.end}, name});
        decode_values(path, name, data + at.begin, static_cast<std::size_t>(at.count), t);
        out.emplace(name, std::move(t));
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i) {
        if (ranges[i].first.first < ranges[i - 1].first.second) {
            fail(kReader, path,
                 tensor_label(ranges[i].second) + ": data_offsets overlap those of " + tensor_label(ranges[i - 1].second));
        }
    }
    return out;
}

namespace {

// The file of write_safetensors / save_safetensors: `entries` as F32, then
// `batch_counts` as I64 zeros.
void write_f32_file(const std::string& path, const char* fn, const std::vector<std::pair<std::string, const Tensor*>>& entries,
                    const std::vector<std::string>& batch_counts) {
    json header = json::object();
    header["__metadata__"] = {{"format", "pt"}, {"writer", "xgrad"}};
    std::uint64_t offset = 0;
    for (const auto& [name, tensor] : entries) {
        const Tensor& t = *tensor;
        const auto bad = std::find_if(t.begin(), t.end(), [](float v) { return !std::isfinite(v); });
        if (bad != t.end()) {
            fail(fn, path,
                 tensor_label(name) + " holds " + std::to_string(*bad) + " at " + std::to_string(bad - t.begin()) +
                     " (expected finite values; nothing written)");
        }
        const std::uint64_t size = 4 * t.size();
        const std::vector<std::uint64_t> shape(t.shape().begin(), t.shape().end());
        header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + size}}};
        offset += size;
    }
    for (const std::string& name : batch_counts) {
        header[name] = {{"dtype", "I64"}, {"shape", json::array()}, {"data_offsets", {offset, offset + 8}}};
        offset += 8;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-aligned, as the reference writer pads
    std::string bytes(8, '\0');
    for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>((std::uint64_t(text.size()) >> (8 * i)) & 0xff);
    bytes += text;
    static_assert(std::numeric_limits<float>::is_iec559, "F32 is IEEE 754 binary32");
    for (const auto& [name, tensor] : entries) {
        for (float v : *tensor) {
            std::uint32_t b = 0;
            std::memcpy(&b, &v, sizeof b);
            for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((b >> (8 * i)) & 0xff));
        }
    }
    bytes.append(8 * batch_counts.size(), '\0');  // num_batches_tracked = 0
    write_file_atomically(path, {bytes});
}

void refuse_reserved_name(const std::string& path, const std::string& name) {
    if (name.empty() || name == "__metadata__") {
        throw std::invalid_argument("write_safetensors: " + path + ": '" + name + "' cannot name a tensor");
    }
}

}  // namespace

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors) {
    std::vector<std::pair<std::string, const Tensor*>> entries;
    entries.reserve(tensors.size());
    for (const auto& [name, tensor] : tensors) {
        refuse_reserved_name(path, name);
        entries.emplace_back(name, &tensor);
    }
    write_f32_file(path, "write_safetensors", entries, {});
}

void save_safetensors(const Module& module, const std::string& path) {
    std::vector<std::string> counts;
    const std::vector<Named> named = state_dict(module, &counts);
    std::vector<std::pair<std::string, const Tensor*>> entries;
    entries.reserve(named.size());
    for (const Named& e : named) entries.emplace_back(e.file_name, &e.var.value());
    write_f32_file(path, "save_safetensors", entries, counts);
}

void load_safetensors(Module& module, const std::string& path) {
    const char* fn = "load_safetensors";
    std::map<std::string, SafetensorsTensor> file = read_safetensors(path);
    std::vector<std::string> counts;
    const std::vector<Named> entries = state_dict(module, &counts);
    std::vector<Tensor> values;
    for (const Named& e : entries) {
        const auto it = file.find(e.file_name);
        if (it == file.end()) fail(fn, path, tensor_label(e.file_name) + " is missing (the module has it)");
        SafetensorsTensor& t = it->second;
        if (t.shape != e.var.shape()) {
            fail(fn, path,
                 tensor_label(e.file_name) + " is " + shape_string(t.shape) + " in the file but " + shape_string(e.var.shape()) +
                     " in the module");
        }
        if (t.dtype == "I64") {
            Tensor v = Tensor::from_shape(t.shape);
            for (std::size_t i = 0; i < t.integers.size(); ++i) {
                const std::int64_t n = t.integers[i];
                v.data()[i] = static_cast<float>(n);
                if (n < -(std::int64_t(1) << 60) || n > (std::int64_t(1) << 60) || static_cast<std::int64_t>(v.data()[i]) != n) {
                    fail(fn, path,
                         tensor_label(e.file_name) + ": I64 value " + std::to_string(n) + " at " + std::to_string(i) +
                             " is not exactly a float");
                }
            }
            t.values = std::move(v);
        }
        const auto bad = std::find_if(t.values.begin(), t.values.end(), [](float v) { return !std::isfinite(v); });
        if (bad != t.values.end()) {
            fail(fn, path,
                 tensor_label(e.file_name) + " holds " + std::to_string(*bad) + " at " + std::to_string(bad - t.values.begin()) +
                     " (expected finite values)");
        }
        values.push_back(std::move(t.values));
        file.erase(it);
    }
    for (const std::string& name : counts) {
        const auto it = file.find(name);
        if (it == file.end()) continue;
        if (it->second.dtype != "I64" || it->second.integers.size() != 1) {
            fail(fn, path,
                 tensor_label(name) + " is " + it->second.dtype + " " + shape_string(it->second.shape) +
                     " (expected one I64 value)");
        }
        file.erase(it);
    }
    if (!file.empty()) {
        fail(fn, path,
             tensor_label(file.begin()->first) + " is not in the module" +
                 (file.size() > 1 ? " (and " + std::to_string(file.size() - 1) + " more)" : std::string()));
    }
    for (std::size_t i = 0; i < entries.size(); ++i) {
        Var v = entries[i].var;
        xt::noalias(v.mutable_value()) = values[i];
    }
}

}  // namespace xgrad
