// Host-side checks of the m2ae TensorRT plugins: everything TensorRT calls on a plugin
// and its creator before and around enqueue, through TensorRT's own interfaces
// (IPluginCreatorV3One, IPluginV3 and its three capabilities), compiled against real
// TensorRT headers. enqueue is never called: no GPU here. The only stand-in is the
// dimension-expression builder (expr_builder_double.h); expected values come from
// DESIGN.md section 3, not from the plugin code.
//
// Prints one line per failed check and a summary; exits 1 when any check failed.
#include "expr_builder_double.h"
#include "masked_ops_creators.h"
#include "plugin_common.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace
{

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginCreatorV3One;
using nvinfer1::IPluginV3;
using nvinfer1::IPluginV3OneBuild;
using nvinfer1::IPluginV3OneCore;
using nvinfer1::IPluginV3OneRuntime;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;
using nvinfer1::TensorRTPhase;
using PluginPtr = std::unique_ptr<IPluginV3>;

int gChecks = 0;
int gFailures = 0;
std::string gSection;

void check(bool ok, char const* what, int line)
{
    ++gChecks;
    if (!ok)
    {
        ++gFailures;
        std::printf("FAIL [%s] line %d: %s\n", gSection.c_str(), line, what);
    }
}

#define CHECK(cond) check(static_cast<bool>(cond), #cond, __LINE__)

// The logger TensorRT would hand over through setLoggerFinder: error paths must say why.
class RecordingLogger final : public nvinfer1::ILogger
{
public:
    void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            messages.emplace_back(msg);
        }
    }

    std::vector<std::string> messages;
};

class LoggerFinder final : public nvinfer1::ILoggerFinder
{
public:
    nvinfer1::ILogger* findLogger() noexcept override
    {
        return &logger;
    }

    RecordingLogger logger;
};

LoggerFinder gLoggerFinder;

//! Runs `call` and tells whether it logged at least one warning or error.
bool logs(std::function<void()> const& call)
{
    size_t const before = gLoggerFinder.logger.messages.size();
    call();
    return gLoggerFinder.logger.messages.size() > before;
}

Dims makeDims(std::initializer_list<int64_t> values)
{
    Dims dims{};
    dims.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        dims.d[i++] = v;
    }
    return dims;
}

PluginTensorDesc makeDesc(Dims const& dims, DataType type)
{
    PluginTensorDesc desc{};
    desc.dims = dims;
    desc.type = type;
    desc.format = TensorFormat::kLINEAR;
    desc.scale = 1.0F;
    return desc;
}

//! A build-time descriptor: `dims` may hold -1 where min and max differ.
DynamicPluginTensorDesc makeDynamic(Dims const& dims, Dims const& min, Dims const& max, DataType type)
{
    DynamicPluginTensorDesc desc{};
    desc.desc = makeDesc(dims, type);
    desc.min = min;
    desc.max = max;
    desc.opt = max;
    return desc;
}

DynamicPluginTensorDesc makeStatic(Dims const& dims, DataType type)
{
    return makeDynamic(dims, dims, dims, type);
}

IPluginV3OneCore* core(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneCore*>(plugin.getCapabilityInterface(PluginCapabilityType::kCORE));
}

IPluginV3OneBuild* build(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneBuild*>(plugin.getCapabilityInterface(PluginCapabilityType::kBUILD));
}

IPluginV3OneRuntime* runtime(IPluginV3& plugin)
{
    return static_cast<IPluginV3OneRuntime*>(plugin.getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

PluginPtr create(IPluginCreatorV3One& creator, std::vector<PluginField> const& fields, TensorRTPhase phase)
{
    PluginFieldCollection fc{};
    fc.nbFields = static_cast<int32_t>(fields.size());
    fc.fields = fields.data();
    return PluginPtr(creator.createPlugin("node_0", &fc, phase));
}

constexpr int64_t kNoAccumulate = -100;

//! The accumulate value a plugin serializes; kNoAccumulate when it serializes none or
//! the field is not one int32.
int64_t serializedAccumulate(IPluginV3& plugin)
{
    PluginFieldCollection const* fc = runtime(plugin)->getFieldsToSerialize();
    if (fc == nullptr)
    {
        return kNoAccumulate;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        if (f.name != nullptr && std::strcmp(f.name, "accumulate") == 0)
        {
            if (f.type != PluginFieldType::kINT32 || f.length != 1 || f.data == nullptr)
            {
                return kNoAccumulate;
            }
            return *static_cast<int32_t const*>(f.data);
        }
    }
    return kNoAccumulate;
}

constexpr TensorRTPhase kPhases[] = {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME};

void checkIdentity(IPluginCreatorV3One& creator, char const* name)
{
    CHECK(std::strcmp(creator.getPluginName(), name) == 0);
    CHECK(std::strcmp(creator.getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator.getPluginNamespace(), "m2ae") == 0);
    CHECK(std::strcmp(creator.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    for (TensorRTPhase phase : kPhases)
    {
        PluginPtr plugin = create(creator, {}, phase);
        CHECK(plugin != nullptr);
        if (plugin == nullptr)
        {
            continue;
        }
        // TensorRT matches a plugin to its creator by these three strings.
        IPluginV3OneCore* c = core(*plugin);
        CHECK(c != nullptr);
        if (c != nullptr)
        {
            CHECK(std::strcmp(c->getPluginName(), name) == 0);
            CHECK(std::strcmp(c->getPluginVersion(), "1") == 0);
            CHECK(std::strcmp(c->getPluginNamespace(), "m2ae") == 0);
        }
    }
}

void testCreators()
{
    m2ae::MaskedGatherCreator gather;
    m2ae::MaskedScatterCreator scatter;

    gSection = "gather creator";
    checkIdentity(gather, "MaskedGather");
    PluginFieldCollection const* gatherNames = gather.getFieldNames();
    CHECK(gatherNames != nullptr && gatherNames->nbFields == 0);
    for (TensorRTPhase phase : kPhases)
    {
        // An attribute the op does not have is ignored, not an error.
        int32_t const stray = 1;
        PluginPtr plugin = create(gather, {PluginField("accumulate", &stray, PluginFieldType::kINT32, 1)}, phase);
        CHECK(plugin != nullptr);
        CHECK(plugin != nullptr && runtime(*plugin)->getFieldsToSerialize() != nullptr
            && runtime(*plugin)->getFieldsToSerialize()->nbFields == 0);
        PluginPtr fromNull(gather.createPlugin("node_0", nullptr, phase));
        CHECK(fromNull != nullptr);
    }

    gSection = "scatter creator";
    checkIdentity(scatter, "MaskedScatter");
    PluginFieldCollection const* names = scatter.getFieldNames();
    CHECK(names != nullptr && names->nbFields == 1);
    if (names != nullptr && names->nbFields == 1)
    {
        // The ONNX parser collects exactly these attributes, as the types named here.
        CHECK(std::strcmp(names->fields[0].name, "accumulate") == 0);
        CHECK(names->fields[0].type == PluginFieldType::kINT32);
        CHECK(names->fields[0].length == 1);
    }

    int8_t const one8 = 1;
    int16_t const one16 = 1;
    int32_t const zero32 = 0;
    int32_t const one32 = 1;
    int64_t const one64 = 1;
    int32_t const two32 = 2;
    int32_t const minus32 = -1;
    int64_t const huge64 = (int64_t{1} << 32) + 1; // 1 after a careless cast to int32
    int32_t const pair32[2] = {1, 1};
    float const onef = 1.0F;
    char const text[] = "1";
    for (TensorRTPhase phase : kPhases)
    {
        gSection = std::string("scatter creator, phase ") + (phase == TensorRTPhase::kBUILD ? "build" : "runtime");
        struct Accepted
        {
            PluginField field;
            int64_t expected;
        };
        Accepted const accepted[] = {
            {PluginField("accumulate", &zero32, PluginFieldType::kINT32, 1), 0},
            {PluginField("accumulate", &one32, PluginFieldType::kINT32, 1), 1},
            {PluginField("accumulate", &one8, PluginFieldType::kINT8, 1), 1},
            {PluginField("accumulate", &one16, PluginFieldType::kINT16, 1), 1},
            {PluginField("accumulate", &one64, PluginFieldType::kINT64, 1), 1},
        };
        for (Accepted const& a : accepted)
        {
            PluginPtr plugin = create(scatter, {a.field}, phase);
            CHECK(plugin != nullptr);
            CHECK(plugin != nullptr && serializedAccumulate(*plugin) == a.expected);
        }
        // Missing attribute: ONNX's default, replace.
        PluginPtr missing = create(scatter, {}, phase);
        CHECK(missing != nullptr && serializedAccumulate(*missing) == 0);
        // Fields the parser may pass along with it select nothing.
        PluginPtr withOthers = create(scatter,
            {PluginField("plugin_version", text, PluginFieldType::kCHAR, 2),
                PluginField("accumulate", &one32, PluginFieldType::kINT32, 1)},
            phase);
        CHECK(withOthers != nullptr && serializedAccumulate(*withOthers) == 1);

        PluginField const malformed[] = {
            PluginField("accumulate", &two32, PluginFieldType::kINT32, 1),
            PluginField("accumulate", &minus32, PluginFieldType::kINT32, 1),
            PluginField("accumulate", &huge64, PluginFieldType::kINT64, 1),
            PluginField("accumulate", pair32, PluginFieldType::kINT32, 2),
            PluginField("accumulate", &one32, PluginFieldType::kINT32, 0),
            PluginField("accumulate", nullptr, PluginFieldType::kINT32, 1),
            PluginField("accumulate", &onef, PluginFieldType::kFLOAT32, 1),
            PluginField("accumulate", text, PluginFieldType::kCHAR, 2),
            PluginField("accumulate", &one32, PluginFieldType::kUNKNOWN, 1),
        };
        for (PluginField const& field : malformed)
        {
            PluginPtr plugin;
            CHECK(logs([&] { plugin = create(scatter, {field}, phase); }));
            CHECK(plugin == nullptr);
        }
    }
}

void testSerializationCloneAttach()
{
    m2ae::MaskedGatherCreator gather;
    m2ae::MaskedScatterCreator scatter;
    for (int32_t accumulate : {0, 1})
    {
        gSection = "scatter serialization, accumulate " + std::to_string(accumulate);
        PluginPtr original = create(scatter, {PluginField("accumulate", &accumulate, PluginFieldType::kINT32, 1)},
            TensorRTPhase::kBUILD);
        CHECK(original != nullptr);
        if (original == nullptr)
        {
            continue;
        }
        // What an engine stores is what the runtime creator gets back.
        PluginFieldCollection const* stored = runtime(*original)->getFieldsToSerialize();
        CHECK(stored != nullptr);
        PluginPtr restored(scatter.createPlugin("node_0", stored, TensorRTPhase::kRUNTIME));
        CHECK(restored != nullptr && serializedAccumulate(*restored) == accumulate);

        PluginPtr copy(original->clone());
        CHECK(copy != nullptr && copy.get() != original.get());
        PluginPtr attached(runtime(*original)->attachToContext(nullptr));
        CHECK(attached != nullptr && attached.get() != original.get());
        // A copy's fields belong to the copy: they survive the original.
        PluginFieldCollection const* copyFields = copy != nullptr ? runtime(*copy)->getFieldsToSerialize() : nullptr;
        CHECK(copyFields != nullptr && copyFields != runtime(*original)->getFieldsToSerialize());
        original.reset();
        CHECK(copy != nullptr && serializedAccumulate(*copy) == accumulate);
        CHECK(attached != nullptr && serializedAccumulate(*attached) == accumulate);
        PluginPtr copyOfCopy(copy != nullptr ? copy->clone() : nullptr);
        CHECK(copyOfCopy != nullptr && serializedAccumulate(*copyOfCopy) == accumulate);
    }

    gSection = "gather serialization";
    PluginPtr original = create(gather, {}, TensorRTPhase::kBUILD);
    CHECK(original != nullptr);
    if (original != nullptr)
    {
        PluginFieldCollection const* stored = runtime(*original)->getFieldsToSerialize();
        CHECK(stored != nullptr && stored->nbFields == 0);
        PluginPtr restored(gather.createPlugin("node_0", stored, TensorRTPhase::kRUNTIME));
        CHECK(restored != nullptr);
        PluginPtr copy(original->clone());
        CHECK(copy != nullptr && copy.get() != original.get() && core(*copy) != nullptr
            && std::strcmp(core(*copy)->getPluginName(), "MaskedGather") == 0);
        PluginPtr attached(runtime(*original)->attachToContext(nullptr));
        CHECK(attached != nullptr && attached.get() != original.get());
    }
}

void checkCapabilities(IPluginV3& plugin)
{
    CHECK(std::strcmp(plugin.getInterfaceInfo().kind, "PLUGIN") == 0);
    struct Expected
    {
        PluginCapabilityType type;
        char const* kind;
    };
    Expected const expected[] = {
        {PluginCapabilityType::kCORE, "PLUGIN_V3ONE_CORE"},
        {PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD"},
        {PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME"},
    };
    for (Expected const& e : expected)
    {
        nvinfer1::IPluginCapability* capability = plugin.getCapabilityInterface(e.type);
        CHECK(capability != nullptr);
        // The interface each pointer really is: a wrong cast would name another kind.
        CHECK(capability != nullptr && std::strcmp(capability->getInterfaceInfo().kind, e.kind) == 0);
        CHECK(capability != nullptr && capability->getInterfaceInfo().major == 1);
    }
    CHECK(plugin.getCapabilityInterface(static_cast<PluginCapabilityType>(7)) == nullptr);
    CHECK(build(plugin)->getNbOutputs() == 1);
}

void checkOutputTypes(IPluginV3& plugin)
{
    IPluginV3OneBuild* b = build(plugin);
    for (DataType type : {DataType::kFLOAT, DataType::kHALF})
    {
        DataType const inputs[] = {type, type, DataType::kINT32};
        DataType output = DataType::kINT64;
        CHECK(b->getOutputDataTypes(&output, 1, inputs, 3) == 0);
        CHECK(output == type);
    }
    DataType const inputs[] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32};
    DataType outputs[2] = {};
    CHECK(logs([&] { CHECK(b->getOutputDataTypes(outputs, 1, inputs, 2) != 0); }));
    CHECK(logs([&] { CHECK(b->getOutputDataTypes(outputs, 2, inputs, 3) != 0); }));
}

//! DESIGN.md section 3 for both ops: inputs 0 and 1 and the output share one float
//! type, input 2 holds int32 indices, every tensor is linear (NCHW / row-major).
bool expectedAt(int32_t pos, PluginTensorDesc const* io)
{
    if (io[pos].format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 2)
    {
        return io[pos].type == DataType::kINT32;
    }
    if (pos == 0)
    {
        return io[pos].type == DataType::kFLOAT || io[pos].type == DataType::kHALF;
    }
    return io[pos].type == io[0].type;
}

void checkFormats(IPluginV3& plugin)
{
    IPluginV3OneBuild* b = build(plugin);
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kINT8};
    TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW32, TensorFormat::kHWC8};
    constexpr int32_t kChoices = 4 * 3;
    int32_t mismatches = 0;
    int32_t fullyAccepted = 0;
    DynamicPluginTensorDesc io[4] = {};
    // TensorRT asks position by position and only with earlier positions set to
    // choices the plugin accepted: walk every combination that way.
    for (int32_t combo = 0; combo < kChoices * kChoices * kChoices * kChoices; ++combo)
    {
        int32_t rest = combo;
        PluginTensorDesc descs[4];
        for (int32_t pos = 0; pos < 4; ++pos)
        {
            descs[pos] = makeDesc(makeDims({1}), types[rest % kChoices / 3]);
            descs[pos].format = formats[rest % 3];
            rest /= kChoices;
            io[pos] = makeStatic(descs[pos].dims, descs[pos].type);
            io[pos].desc.format = descs[pos].format;
        }
        bool allAccepted = true;
        for (int32_t pos = 0; pos < 4 && allAccepted; ++pos)
        {
            bool const expected = expectedAt(pos, descs);
            bool const got = b->supportsFormatCombination(pos, io, 3, 1);
            if (got != expected)
            {
                if (++mismatches <= 5)
                {
                    std::printf("FAIL [%s] supportsFormatCombination pos %d types %d,%d,%d,%d formats %d,%d,%d,%d: got %d\n",
                        gSection.c_str(), pos, static_cast<int>(descs[0].type), static_cast<int>(descs[1].type),
                        static_cast<int>(descs[2].type), static_cast<int>(descs[3].type),
                        static_cast<int>(descs[0].format), static_cast<int>(descs[1].format),
                        static_cast<int>(descs[2].format), static_cast<int>(descs[3].format), got ? 1 : 0);
                }
            }
            allAccepted = expected;
        }
        fullyAccepted += allAccepted ? 1 : 0;
    }
    CHECK(mismatches == 0);
    // float32 and float16, each with int32 indices, all linear.
    CHECK(fullyAccepted == 2);
    io[0] = makeStatic(makeDims({1}), DataType::kFLOAT);
    CHECK(!b->supportsFormatCombination(-1, io, 3, 1));
    CHECK(!b->supportsFormatCombination(4, io, 3, 1));
    CHECK(!b->supportsFormatCombination(0, io, 2, 1));
    CHECK(!b->supportsFormatCombination(0, io, 3, 2));
}

DimsExprs exprs(m2ae_test::ExprStore& store, std::initializer_list<char const*> names)
{
    DimsExprs out{};
    out.nbDims = static_cast<int32_t>(names.size());
    int32_t i = 0;
    for (char const* name : names)
    {
        out.d[i++] = store.symbolic(name);
    }
    return out;
}

DimsExprs constants(m2ae_test::ExprStore& store, std::initializer_list<int64_t> values)
{
    DimsExprs out{};
    out.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        out.d[i++] = store.constant(v);
    }
    return out;
}

//! getOutputShapes on three inputs; outputs[0] receives the shape. Returns its status.
int32_t outputShapes(IPluginV3& plugin, DimsExprs const* inputs, int32_t nbInputs, DimsExprs* outputs,
    int32_t nbOutputs, m2ae_test::ExprBuilder& builder)
{
    return build(plugin)->getOutputShapes(inputs, nbInputs, nullptr, 0, outputs, nbOutputs, builder);
}

bool isConstant(IDimensionExpr const* e, int64_t value)
{
    return e != nullptr && e->isConstant() && e->getConstantValue() == value;
}

void testGatherShapes(IPluginV3& plugin)
{
    gSection = "gather getOutputShapes";
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {exprs(s, {"N", "C", "H", "W"}), exprs(s, {"C", "Kt"}), exprs(s, {"T", "K"})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 2);
        if (out[0].nbDims == 2)
        {
            std::string const rows = out[0].d[0] != nullptr ? s.text(*out[0].d[0]) : "";
            CHECK(rows == "(T*C)" || rows == "(C*T)");
            CHECK(out[0].d[1] != nullptr && s.text(*out[0].d[1]) == "K");
            CHECK(out[0].d[0] != nullptr && !out[0].d[0]->isConstant());
        }
        CHECK(s.operations.size() == 1);
    }
    struct ConstCase
    {
        int64_t n, c, h, w, kt, t, k;
    };
    ConstCase const cases[] = {{2, 8, 5, 7, 3, 9, 11}, {1, 4, 3, 3, 0, 9, 6}, {1, 4, 3, 3, 5, 9, 0}, {3, 16, 2, 2, 4, 1, 4}};
    for (ConstCase const& k : cases)
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {constants(s, {k.n, k.c, k.h, k.w}), constants(s, {k.c, k.kt}), constants(s, {k.t, k.k})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 2 && isConstant(out[0].d[0], k.t * k.c) && isConstant(out[0].d[1], k.k));
    }
    {
        // Static C and T, dynamic K (NonZero's count) and H, W.
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {exprs(s, {"N", "C", "H", "W"}), exprs(s, {"C", "Kt"}), exprs(s, {"T", "K"})};
        in[0].d[1] = s.constant(8);
        in[1].d[0] = s.constant(8);
        in[2].d[0] = s.constant(9);
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 2 && isConstant(out[0].d[0], 72));
        CHECK(out[0].nbDims == 2 && out[0].d[1] != nullptr && s.text(*out[0].d[1]) == "K");
    }
    m2ae_test::ExprBuilder builder;
    auto& s = builder.store;
    DimsExprs const dense = exprs(s, {"N", "C", "H", "W"});
    DimsExprs const tokens = exprs(s, {"C", "Kt"});
    DimsExprs const table = exprs(s, {"T", "K"});
    DimsExprs const bad[][3] = {
        {exprs(s, {"C", "H", "W"}), tokens, table},
        {exprs(s, {"N", "C", "H", "W", "D"}), tokens, table},
        {dense, exprs(s, {"C"}), table},
        {dense, exprs(s, {"C", "Kt", "X"}), table},
        {dense, tokens, exprs(s, {"K"})},
        {dense, tokens, exprs(s, {"T", "K", "X"})},
    };
    for (auto const& in : bad)
    {
        DimsExprs out[1] = {};
        CHECK(logs([&] { CHECK(outputShapes(plugin, in, 3, out, 1, builder) != 0); }));
    }
    DimsExprs const good[3] = {dense, tokens, table};
    DimsExprs out[2] = {};
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 2, out, 1, builder) != 0); }));
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 3, out, 2, builder) != 0); }));
}

void testScatterShapes(IPluginV3& plugin)
{
    gSection = "scatter getOutputShapes";
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {exprs(s, {"N", "C", "H", "W"}), exprs(s, {"C", "K"}), exprs(s, {"K"})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4);
        char const* const names[] = {"N", "C", "H", "W"};
        for (int32_t i = 0; i < 4 && out[0].nbDims == 4; ++i)
        {
            CHECK(out[0].d[i] != nullptr && s.text(*out[0].d[i]) == names[i]);
        }
    }
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {constants(s, {2, 3, 5, 7}), constants(s, {3, 0}), constants(s, {0})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4 && isConstant(out[0].d[0], 2) && isConstant(out[0].d[1], 3)
            && isConstant(out[0].d[2], 5) && isConstant(out[0].d[3], 7));
    }
    m2ae_test::ExprBuilder builder;
    auto& s = builder.store;
    DimsExprs const base = exprs(s, {"N", "C", "H", "W"});
    DimsExprs const values = exprs(s, {"C", "K"});
    DimsExprs const index = exprs(s, {"K"});
    DimsExprs const bad[][3] = {
        {exprs(s, {"C", "H", "W"}), values, index},
        {base, exprs(s, {"K"}), index},
        {base, exprs(s, {"C", "K", "X"}), index},
        {base, values, exprs(s, {})},
        {base, values, exprs(s, {"K", "X"})},
    };
    for (auto const& in : bad)
    {
        DimsExprs out[1] = {};
        CHECK(logs([&] { CHECK(outputShapes(plugin, in, 3, out, 1, builder) != 0); }));
    }
    DimsExprs const good[3] = {base, values, index};
    DimsExprs out[2] = {};
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 2, out, 1, builder) != 0); }));
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 3, out, 2, builder) != 0); }));
}

//! configurePlugin, getWorkspaceSize and onShapeChange on one op's tensors.
struct OpShapes
{
    std::vector<DynamicPluginTensorDesc> buildIn; // build time, -1 where dynamic
    DynamicPluginTensorDesc buildOut;
    std::vector<std::vector<Dims>> goodRuntime;    // {in0, in1, in2, out}
    std::vector<std::vector<Dims>> badRuntime;
    std::vector<std::vector<Dims>> badBuildRanks;  // {in0, in1, in2}
    std::vector<std::vector<Dims>> buildAgreeing;  // {in0, in1, in2} with -1s: accepted
    std::vector<std::vector<Dims>> buildDisagreeing;  // known extents that contradict
};

void checkConfigureAndShapeChange(IPluginV3& plugin, OpShapes const& shapes, DataType type)
{
    IPluginV3OneBuild* b = build(plugin);
    IPluginV3OneRuntime* r = runtime(plugin);
    CHECK(b->configurePlugin(shapes.buildIn.data(), 3, &shapes.buildOut, 1) == 0);
    CHECK(b->getWorkspaceSize(shapes.buildIn.data(), 3, &shapes.buildOut, 1) == 0);
    CHECK(logs([&] { CHECK(b->configurePlugin(shapes.buildIn.data(), 2, &shapes.buildOut, 1) != 0); }));
    auto buildDescs = [&](std::vector<Dims> const& dims, DynamicPluginTensorDesc* in) {
        for (int32_t i = 0; i < 3; ++i)
        {
            in[i] = makeStatic(dims[i], i == 2 ? DataType::kINT32 : type);
        }
    };
    DynamicPluginTensorDesc buildIn[3];
    for (auto const& dims : shapes.badBuildRanks)
    {
        buildDescs(dims, buildIn);
        CHECK(logs([&] { CHECK(b->configurePlugin(buildIn, 3, &shapes.buildOut, 1) != 0); }));
    }
    for (auto const& dims : shapes.buildAgreeing)
    {
        buildDescs(dims, buildIn);
        CHECK(b->configurePlugin(buildIn, 3, &shapes.buildOut, 1) == 0);
    }
    for (auto const& dims : shapes.buildDisagreeing)
    {
        buildDescs(dims, buildIn);
        CHECK(logs([&] { CHECK(b->configurePlugin(buildIn, 3, &shapes.buildOut, 1) != 0); }));
    }
    auto runtimeDescs = [&](std::vector<Dims> const& dims, PluginTensorDesc* in, PluginTensorDesc* out) {
        for (int32_t i = 0; i < 3; ++i)
        {
            in[i] = makeDesc(dims[i], i == 2 ? DataType::kINT32 : type);
        }
        *out = makeDesc(dims[3], type);
    };
    for (auto const& dims : shapes.goodRuntime)
    {
        PluginTensorDesc in[3];
        PluginTensorDesc out;
        runtimeDescs(dims, in, &out);
        CHECK(r->onShapeChange(in, 3, &out, 1) == 0);
    }
    for (auto const& dims : shapes.badRuntime)
    {
        PluginTensorDesc in[3];
        PluginTensorDesc out;
        runtimeDescs(dims, in, &out);
        CHECK(logs([&] { CHECK(r->onShapeChange(in, 3, &out, 1) != 0); }));
    }
    PluginTensorDesc in[3];
    PluginTensorDesc out;
    runtimeDescs(shapes.goodRuntime.front(), in, &out);
    CHECK(logs([&] { CHECK(r->onShapeChange(in, 2, &out, 1) != 0); }));
    CHECK(logs([&] { CHECK(r->onShapeChange(in, 3, &out, 0) != 0); }));
}

void testConfigureAndShapeChange(IPluginV3& gather, IPluginV3& scatter)
{
    for (DataType type : {DataType::kFLOAT, DataType::kHALF})
    {
        gSection = std::string("gather configure/onShapeChange ") + (type == DataType::kFLOAT ? "fp32" : "fp16");
        OpShapes g;
        g.buildIn = {
            makeDynamic(makeDims({-1, 8, -1, -1}), makeDims({1, 8, 16, 16}), makeDims({2, 8, 64, 64}), type),
            makeDynamic(makeDims({8, -1}), makeDims({8, 0}), makeDims({8, 8192}), type),
            makeDynamic(makeDims({9, -1}), makeDims({9, 0}), makeDims({9, 8192}), DataType::kINT32),
        };
        g.buildOut = makeDynamic(makeDims({72, -1}), makeDims({72, 0}), makeDims({72, 8192}), type);
        g.goodRuntime = {
            {makeDims({2, 8, 5, 7}), makeDims({8, 3}), makeDims({9, 11}), makeDims({72, 11})},
            {makeDims({1, 8, 5, 7}), makeDims({8, 0}), makeDims({9, 11}), makeDims({72, 11})},
            {makeDims({1, 8, 5, 7}), makeDims({8, 3}), makeDims({9, 0}), makeDims({72, 0})},
            {makeDims({1, 8, 5, 7}), makeDims({8, 3}), makeDims({1, 4}), makeDims({8, 4})},
        };
        g.badRuntime = {
            {makeDims({2, 8, 5, 7}), makeDims({4, 3}), makeDims({9, 11}), makeDims({72, 11})},
            {makeDims({8, 5, 7}), makeDims({8, 3}), makeDims({9, 11}), makeDims({72, 11})},
            {makeDims({2, 8, 5, 7}), makeDims({8, 3}), makeDims({99}), makeDims({72, 11})},
        };
        g.badBuildRanks = {
            {makeDims({8, 5, 7}), makeDims({8, 3}), makeDims({9, 11})},
            {makeDims({2, 8, 5, 7}), makeDims({8}), makeDims({9, 11})},
            {makeDims({2, 8, 5, 7}), makeDims({8, 3}), makeDims({99})},
        };
        g.buildAgreeing = {
            {makeDims({-1, -1, -1, -1}), makeDims({8, -1}), makeDims({9, -1})},
            {makeDims({-1, 8, -1, -1}), makeDims({-1, -1}), makeDims({-1, -1})},
        };
        g.buildDisagreeing = {{makeDims({-1, 8, -1, -1}), makeDims({4, -1}), makeDims({9, -1})}};
        checkConfigureAndShapeChange(gather, g, type);

        gSection = std::string("scatter configure/onShapeChange ") + (type == DataType::kFLOAT ? "fp32" : "fp16");
        OpShapes s;
        s.buildIn = {
            makeDynamic(makeDims({-1, 3, -1, -1}), makeDims({1, 3, 16, 16}), makeDims({2, 3, 64, 64}), type),
            makeDynamic(makeDims({3, -1}), makeDims({3, 0}), makeDims({3, 8192}), type),
            makeDynamic(makeDims({-1}), makeDims({0}), makeDims({8192}), DataType::kINT32),
        };
        s.buildOut = s.buildIn[0];
        s.goodRuntime = {
            {makeDims({2, 3, 5, 7}), makeDims({3, 4}), makeDims({4}), makeDims({2, 3, 5, 7})},
            {makeDims({1, 3, 5, 7}), makeDims({3, 0}), makeDims({0}), makeDims({1, 3, 5, 7})},
        };
        s.badRuntime = {
            {makeDims({2, 3, 5, 7}), makeDims({2, 4}), makeDims({4}), makeDims({2, 3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({3, 4}), makeDims({5}), makeDims({2, 3, 5, 7})},
            {makeDims({3, 5, 7}), makeDims({3, 4}), makeDims({4}), makeDims({3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({3, 4}), makeDims({4, 1}), makeDims({2, 3, 5, 7})},
        };
        s.badBuildRanks = {
            {makeDims({3, 5, 7}), makeDims({3, 4}), makeDims({4})},
            {makeDims({2, 3, 5, 7}), makeDims({12}), makeDims({4})},
            {makeDims({2, 3, 5, 7}), makeDims({3, 4}), makeDims({4, 1})},
        };
        s.buildAgreeing = {
            {makeDims({-1, -1, -1, -1}), makeDims({3, 4}), makeDims({-1})},
            {makeDims({-1, 3, -1, -1}), makeDims({-1, -1}), makeDims({4})},
        };
        s.buildDisagreeing = {
            {makeDims({-1, 3, -1, -1}), makeDims({2, -1}), makeDims({-1})},
            {makeDims({-1, 3, -1, -1}), makeDims({3, 5}), makeDims({4})},
        };
        checkConfigureAndShapeChange(scatter, s, type);
    }
}

void testPlugins()
{
    m2ae::MaskedGatherCreator gatherCreator;
    m2ae::MaskedScatterCreator scatterCreator;
    int32_t const add = 1;
    PluginPtr gather = create(gatherCreator, {}, TensorRTPhase::kBUILD);
    PluginPtr scatter = create(scatterCreator, {PluginField("accumulate", &add, PluginFieldType::kINT32, 1)},
        TensorRTPhase::kBUILD);
    gSection = "plugins created";
    CHECK(gather != nullptr && scatter != nullptr);
    if (gather == nullptr || scatter == nullptr)
    {
        return;
    }
    for (IPluginV3* plugin : {gather.get(), scatter.get()})
    {
        gSection = std::string(core(*plugin)->getPluginName()) + " capabilities, types, formats";
        checkCapabilities(*plugin);
        checkOutputTypes(*plugin);
        checkFormats(*plugin);
    }
    testGatherShapes(*gather);
    testScatterShapes(*scatter);
    testConfigureAndShapeChange(*gather, *scatter);
    // A runtime-phase plugin (deserialized engine) answers the runtime calls too.
    gSection = "runtime-phase plugin";
    PluginPtr runtimeScatter = create(scatterCreator, {}, TensorRTPhase::kRUNTIME);
    CHECK(runtimeScatter != nullptr && runtime(*runtimeScatter) != nullptr);
    if (runtimeScatter != nullptr)
    {
        PluginTensorDesc in[3] = {makeDesc(makeDims({1, 3, 4, 4}), DataType::kHALF),
            makeDesc(makeDims({3, 2}), DataType::kHALF), makeDesc(makeDims({2}), DataType::kINT32)};
        PluginTensorDesc out = in[0];
        CHECK(runtime(*runtimeScatter)->onShapeChange(in, 3, &out, 1) == 0);
        CHECK(serializedAccumulate(*runtimeScatter) == 0);
    }
}

} // namespace

int main()
{
    m2ae::setLoggerFinder(&gLoggerFinder);
    testCreators();
    testSerializationCloneAttach();
    testPlugins();
    std::printf("%d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
