// Host-side checks of the m2ae TensorRT plugins: everything TensorRT calls on a plugin
// and its creator before and around enqueue, through TensorRT's own interfaces
// (IPluginCreatorV3One, IPluginV3 and its three capabilities), compiled against real
// TensorRT headers. No GPU here: enqueue runs only where the launchers return before
// touching the device (nothing to gather or scatter, or arguments they refuse). The
// only stand-in is the dimension-expression builder (expr_builder_double.h); expected
// values come from docs/design.md section 3 and trt_plugins/reference.py (the tile
// contract, plugin version "2"), not from the plugin code.
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
#include <limits>
#include <memory>
#include <string>
#include <utility>
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

//! A gather plugin from tile and halo passed as the ONNX parser does: int32 scalars.
PluginPtr createGather(IPluginCreatorV3One& creator, int32_t tile, int32_t halo, TensorRTPhase phase)
{
    return create(creator,
        {PluginField("tile", &tile, PluginFieldType::kINT32, 1), PluginField("halo", &halo, PluginFieldType::kINT32, 1)},
        phase);
}

using Fields = std::vector<std::pair<std::string, int64_t>>;

//! Value standing for a serialized field that is not one int32.
constexpr int64_t kNotInt32 = std::numeric_limits<int64_t>::min();

//! The fields a plugin serializes, in order; {"<null>", kNotInt32} for no collection.
Fields serialized(IPluginV3& plugin)
{
    PluginFieldCollection const* fc = runtime(plugin)->getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        return {{"<null>", kNotInt32}};
    }
    Fields out;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        bool const oneInt32 = f.type == PluginFieldType::kINT32 && f.length == 1 && f.data != nullptr;
        out.emplace_back(f.name != nullptr ? f.name : "<null>", oneInt32 ? *static_cast<int32_t const*>(f.data) : kNotInt32);
    }
    return out;
}

Fields gatherFields(int64_t tile, int64_t halo)
{
    return {{"tile", tile}, {"halo", halo}};
}

constexpr TensorRTPhase kPhases[] = {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME};

char const* phaseName(TensorRTPhase phase)
{
    return phase == TensorRTPhase::kBUILD ? "build" : "runtime";
}

//! Largest side of a window (gather) or tile (scatter): the launchers refuse windows of
//! more than 2^31 - 1 pixels, and 46340^2 < 2^31 - 1 < 46341^2.
constexpr int32_t kMaxSide = 46340;

void checkIdentity(IPluginCreatorV3One& creator, char const* name, std::vector<PluginField> const& valid)
{
    CHECK(std::strcmp(creator.getPluginName(), name) == 0);
    CHECK(std::strcmp(creator.getPluginVersion(), "2") == 0);
    CHECK(std::strcmp(creator.getPluginNamespace(), "m2ae") == 0);
    CHECK(std::strcmp(creator.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    for (TensorRTPhase phase : kPhases)
    {
        PluginPtr plugin = create(creator, valid, phase);
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
            CHECK(std::strcmp(c->getPluginVersion(), "2") == 0);
            CHECK(std::strcmp(c->getPluginNamespace(), "m2ae") == 0);
        }
    }
}

//! The ONNX parser collects exactly the attributes named here, as the types named here.
void checkFieldNames(IPluginCreatorV3One& creator, std::vector<char const*> const& names)
{
    PluginFieldCollection const* fc = creator.getFieldNames();
    CHECK(fc != nullptr && fc->nbFields == static_cast<int32_t>(names.size()));
    if (fc == nullptr || fc->nbFields != static_cast<int32_t>(names.size()))
    {
        return;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        CHECK(fc->fields[i].name != nullptr && std::strcmp(fc->fields[i].name, names[i]) == 0);
        CHECK(fc->fields[i].type == PluginFieldType::kINT32);
        CHECK(fc->fields[i].length == 1);
    }
}

void testGatherCreator()
{
    m2ae::MaskedGatherCreator gather;
    gSection = "gather creator";
    int32_t const tile8 = 8;
    int32_t const halo1 = 1;
    PluginField const tile = PluginField("tile", &tile8, PluginFieldType::kINT32, 1);
    PluginField const halo = PluginField("halo", &halo1, PluginFieldType::kINT32, 1);
    checkIdentity(gather, "MaskedGather", {tile, halo});
    checkFieldNames(gather, {"tile", "halo"});

    int8_t const tile8bit = 16;
    int16_t const halo16bit = 2;
    int16_t const tile16bit = 300;
    int8_t const halo8bit = 0;
    int64_t const tile64bit = 5;
    int64_t const halo64bit = 3;
    int32_t const one32 = 1;
    int32_t const zero32 = 0;
    int32_t const maxSide32 = kMaxSide;
    int32_t const overMaxSide32 = kMaxSide + 1;
    int32_t const maxHalo32 = (kMaxSide - 2) / 2;
    int32_t const overMaxHalo32 = maxHalo32 + 1;
    int32_t const two32 = 2;
    int32_t const int32Max = std::numeric_limits<int32_t>::max();
    int32_t const minus32 = -1;
    int8_t const minus8 = -1;
    int64_t const huge64 = (int64_t{1} << 32) + 8; // 8 after a careless cast to int32
    int64_t const hugeHalo64 = (int64_t{1} << 32) + 1;
    int32_t const pair32[2] = {8, 8};
    float const eightf = 8.0F;
    char const text[] = "8";
    char const version[] = "2";
    char const nameSpace[] = "m2ae";
    for (TensorRTPhase phase : kPhases)
    {
        gSection = std::string("gather creator, phase ") + phaseName(phase);
        struct Accepted
        {
            std::vector<PluginField> fields;
            int64_t tile;
            int64_t halo;
        };
        Accepted const accepted[] = {
            {{tile, halo}, 8, 1},
            {{halo, tile}, 8, 1},
            {{PluginField("tile", &tile8bit, PluginFieldType::kINT8, 1),
                 PluginField("halo", &halo16bit, PluginFieldType::kINT16, 1)},
                16, 2},
            {{PluginField("tile", &tile16bit, PluginFieldType::kINT16, 1),
                 PluginField("halo", &halo8bit, PluginFieldType::kINT8, 1)},
                300, 0},
            {{PluginField("tile", &tile64bit, PluginFieldType::kINT64, 1),
                 PluginField("halo", &halo64bit, PluginFieldType::kINT64, 1)},
                5, 3},
            {{PluginField("tile", &one32, PluginFieldType::kINT32, 1),
                 PluginField("halo", &zero32, PluginFieldType::kINT32, 1)},
                1, 0},
            // The largest windows: 46340 = 46340 + 2*0 = 2 + 2*23169.
            {{PluginField("tile", &maxSide32, PluginFieldType::kINT32, 1),
                 PluginField("halo", &zero32, PluginFieldType::kINT32, 1)},
                kMaxSide, 0},
            {{PluginField("tile", &two32, PluginFieldType::kINT32, 1),
                 PluginField("halo", &maxHalo32, PluginFieldType::kINT32, 1)},
                2, maxHalo32},
            // Fields the parser passes along, and attributes the op does not have, select nothing.
            {{PluginField("plugin_version", version, PluginFieldType::kCHAR, 2),
                 PluginField("plugin_namespace", nameSpace, PluginFieldType::kCHAR, 5), tile,
                 PluginField("accumulate", &one32, PluginFieldType::kINT32, 1), halo},
                8, 1},
        };
        for (Accepted const& a : accepted)
        {
            PluginPtr plugin = create(gather, a.fields, phase);
            CHECK(plugin != nullptr);
            CHECK(plugin != nullptr && serialized(*plugin) == gatherFields(a.tile, a.halo));
        }

        // halo is optional (0), as in the ONNX lowering and the ORT custom op.
        PluginPtr noHalo = create(gather, {tile}, phase);
        CHECK(noHalo != nullptr && serialized(*noHalo) == gatherFields(8, 0));
        PluginPtr noHaloWithOthers
            = create(gather, {PluginField("Halo", &halo1, PluginFieldType::kINT32, 1), tile}, phase);
        CHECK(noHaloWithOthers != nullptr && serialized(*noHaloWithOthers) == gatherFields(8, 0));
        // tile has no default: a model without it is not one this plugin can run.
        std::vector<PluginField> const missing[] = {{}, {halo},
            {PluginField("Tile", &tile8, PluginFieldType::kINT32, 1), halo}};
        for (auto const& fields : missing)
        {
            PluginPtr plugin;
            CHECK(logs([&] { plugin = create(gather, fields, phase); }));
            CHECK(plugin == nullptr);
        }
        PluginPtr fromNull;
        CHECK(logs([&] { fromNull.reset(gather.createPlugin("node_0", nullptr, phase)); }));
        CHECK(fromNull == nullptr);

        // Windows one pixel wider than the largest, also where a sum in int32 would wrap.
        std::vector<PluginField> const tooLarge[] = {
            {PluginField("tile", &overMaxSide32, PluginFieldType::kINT32, 1),
                PluginField("halo", &zero32, PluginFieldType::kINT32, 1)},
            {PluginField("tile", &two32, PluginFieldType::kINT32, 1),
                PluginField("halo", &overMaxHalo32, PluginFieldType::kINT32, 1)},
            {PluginField("tile", &int32Max, PluginFieldType::kINT32, 1),
                PluginField("halo", &int32Max, PluginFieldType::kINT32, 1)},
        };
        for (auto const& fields : tooLarge)
        {
            PluginPtr plugin;
            CHECK(logs([&] { plugin = create(gather, fields, phase); }));
            CHECK(plugin == nullptr);
        }
        PluginField const badTiles[] = {
            PluginField("tile", &zero32, PluginFieldType::kINT32, 1),
            PluginField("tile", &minus32, PluginFieldType::kINT32, 1),
            PluginField("tile", &minus8, PluginFieldType::kINT8, 1),
            PluginField("tile", &huge64, PluginFieldType::kINT64, 1),
            PluginField("tile", pair32, PluginFieldType::kINT32, 2),
            PluginField("tile", &tile8, PluginFieldType::kINT32, 0),
            PluginField("tile", nullptr, PluginFieldType::kINT32, 1),
            PluginField("tile", &eightf, PluginFieldType::kFLOAT32, 1),
            PluginField("tile", text, PluginFieldType::kCHAR, 2),
            PluginField("tile", &tile8, PluginFieldType::kUNKNOWN, 1),
        };
        for (PluginField const& bad : badTiles)
        {
            PluginPtr plugin;
            CHECK(logs([&] { plugin = create(gather, {bad, halo}, phase); }));
            CHECK(plugin == nullptr);
        }
        PluginField const badHalos[] = {
            PluginField("halo", &minus32, PluginFieldType::kINT32, 1),
            PluginField("halo", &minus8, PluginFieldType::kINT8, 1),
            PluginField("halo", &hugeHalo64, PluginFieldType::kINT64, 1),
            PluginField("halo", pair32, PluginFieldType::kINT32, 2),
            PluginField("halo", nullptr, PluginFieldType::kINT32, 1),
            PluginField("halo", &eightf, PluginFieldType::kFLOAT32, 1),
        };
        for (PluginField const& bad : badHalos)
        {
            PluginPtr plugin;
            CHECK(logs([&] { plugin = create(gather, {tile, bad}, phase); }));
            CHECK(plugin == nullptr);
        }
    }
}

void testScatterCreator()
{
    m2ae::MaskedScatterCreator scatter;
    gSection = "scatter creator";
    checkIdentity(scatter, "MaskedScatter", {});
    checkFieldNames(scatter, {});
    int32_t const one32 = 1;
    int32_t const tile8 = 8;
    for (TensorRTPhase phase : kPhases)
    {
        gSection = std::string("scatter creator, phase ") + phaseName(phase);
        // The tile size comes from values' shape; version 1's accumulate and a stray
        // tile select nothing.
        PluginPtr plugin = create(scatter,
            {PluginField("accumulate", &one32, PluginFieldType::kINT32, 1),
                PluginField("tile", &tile8, PluginFieldType::kINT32, 1)},
            phase);
        CHECK(plugin != nullptr && serialized(*plugin).empty());
        PluginPtr fromNull(scatter.createPlugin("node_0", nullptr, phase));
        CHECK(fromNull != nullptr && serialized(*fromNull).empty());
    }
}

void testSerializationCloneAttach()
{
    m2ae::MaskedGatherCreator gather;
    m2ae::MaskedScatterCreator scatter;
    struct TileHalo
    {
        int32_t tile;
        int32_t halo;
    };
    for (TileHalo const th : {TileHalo{8, 1}, TileHalo{16, 0}, TileHalo{1, 3}})
    {
        gSection = "gather serialization, tile " + std::to_string(th.tile) + " halo " + std::to_string(th.halo);
        Fields const expected = gatherFields(th.tile, th.halo);
        PluginPtr original = createGather(gather, th.tile, th.halo, TensorRTPhase::kBUILD);
        CHECK(original != nullptr);
        if (original == nullptr)
        {
            continue;
        }
        CHECK(serialized(*original) == expected);
        // What an engine stores is what the runtime creator gets back.
        PluginFieldCollection const* stored = runtime(*original)->getFieldsToSerialize();
        CHECK(stored != nullptr);
        PluginPtr restored(gather.createPlugin("node_0", stored, TensorRTPhase::kRUNTIME));
        CHECK(restored != nullptr && serialized(*restored) == expected);

        PluginPtr copy(original->clone());
        CHECK(copy != nullptr && copy.get() != original.get());
        PluginPtr attached(runtime(*original)->attachToContext(nullptr));
        CHECK(attached != nullptr && attached.get() != original.get());
        // A copy's fields belong to the copy: they survive the original.
        PluginFieldCollection const* copyFields = copy != nullptr ? runtime(*copy)->getFieldsToSerialize() : nullptr;
        CHECK(copyFields != nullptr && copyFields != runtime(*original)->getFieldsToSerialize());
        CHECK(copyFields != nullptr && copyFields->nbFields == 2
            && copyFields->fields != runtime(*original)->getFieldsToSerialize()->fields);
        original.reset();
        CHECK(copy != nullptr && serialized(*copy) == expected);
        CHECK(attached != nullptr && serialized(*attached) == expected);
        PluginPtr copyOfCopy(copy != nullptr ? copy->clone() : nullptr);
        CHECK(copyOfCopy != nullptr && serialized(*copyOfCopy) == expected);
        CHECK(copyOfCopy != nullptr && std::strcmp(core(*copyOfCopy)->getPluginName(), "MaskedGather") == 0);
    }

    gSection = "scatter serialization";
    PluginPtr original = create(scatter, {}, TensorRTPhase::kBUILD);
    CHECK(original != nullptr);
    if (original != nullptr)
    {
        PluginFieldCollection const* stored = runtime(*original)->getFieldsToSerialize();
        CHECK(stored != nullptr && stored->nbFields == 0);
        PluginPtr restored(scatter.createPlugin("node_0", stored, TensorRTPhase::kRUNTIME));
        CHECK(restored != nullptr && serialized(*restored).empty());
        PluginPtr copy(original->clone());
        CHECK(copy != nullptr && copy.get() != original.get() && core(*copy) != nullptr
            && std::strcmp(core(*copy)->getPluginName(), "MaskedScatter") == 0);
        PluginPtr attached(runtime(*original)->attachToContext(nullptr));
        CHECK(attached != nullptr && attached.get() != original.get() && serialized(*attached).empty());
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

//! The float inputs come first, the int32 tile ids last.
void checkOutputTypes(IPluginV3& plugin, int32_t nbInputs)
{
    IPluginV3OneBuild* b = build(plugin);
    for (DataType type : {DataType::kFLOAT, DataType::kHALF})
    {
        DataType inputs[4] = {type, type, type, type};
        inputs[nbInputs - 1] = DataType::kINT32;
        DataType output = DataType::kINT64;
        CHECK(b->getOutputDataTypes(&output, 1, inputs, nbInputs) == 0);
        CHECK(output == type);
    }
    DataType const inputs[4] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32, DataType::kINT32};
    DataType outputs[2] = {};
    CHECK(logs([&] { CHECK(b->getOutputDataTypes(outputs, 1, inputs, nbInputs - 1) != 0); }));
    CHECK(logs([&] { CHECK(b->getOutputDataTypes(outputs, 1, inputs, nbInputs + 1) != 0); }));
    CHECK(logs([&] { CHECK(b->getOutputDataTypes(outputs, 2, inputs, nbInputs) != 0); }));
}

//! docs/design.md section 3 for both ops: the float inputs and the output share one float
//! type, the last input holds int32 tile ids, every tensor is linear (NCHW).
bool expectedAt(int32_t pos, PluginTensorDesc const* io, int32_t nbInputs)
{
    if (io[pos].format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == nbInputs - 1)
    {
        return io[pos].type == DataType::kINT32;
    }
    if (pos == 0)
    {
        return io[pos].type == DataType::kFLOAT || io[pos].type == DataType::kHALF;
    }
    return io[pos].type == io[0].type;
}

void checkFormats(IPluginV3& plugin, int32_t nbInputs)
{
    IPluginV3OneBuild* b = build(plugin);
    DataType const types[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kINT8};
    TensorFormat const formats[] = {TensorFormat::kLINEAR, TensorFormat::kCHW32, TensorFormat::kHWC8};
    constexpr int32_t kChoices = 4 * 3;
    int32_t const nbPositions = nbInputs + 1;
    int32_t nbCombos = 1;
    for (int32_t pos = 0; pos < nbPositions; ++pos)
    {
        nbCombos *= kChoices;
    }
    int32_t mismatches = 0;
    int32_t fullyAccepted = 0;
    DynamicPluginTensorDesc io[5] = {};
    // TensorRT asks position by position and only with earlier positions set to
    // choices the plugin accepted: walk every combination that way.
    for (int32_t combo = 0; combo < nbCombos; ++combo)
    {
        int32_t rest = combo;
        PluginTensorDesc descs[4];
        for (int32_t pos = 0; pos < nbPositions; ++pos)
        {
            descs[pos] = makeDesc(makeDims({1}), types[rest % kChoices / 3]);
            descs[pos].format = formats[rest % 3];
            rest /= kChoices;
            io[pos] = makeStatic(descs[pos].dims, descs[pos].type);
            io[pos].desc.format = descs[pos].format;
        }
        bool allAccepted = true;
        for (int32_t pos = 0; pos < nbPositions && allAccepted; ++pos)
        {
            bool const expected = expectedAt(pos, descs, nbInputs);
            bool const got = b->supportsFormatCombination(pos, io, nbInputs, 1);
            if (got != expected && ++mismatches <= 5)
            {
                std::printf("FAIL [%s] supportsFormatCombination pos %d of combination %d: got %d\n",
                    gSection.c_str(), pos, combo, got ? 1 : 0);
            }
            allAccepted = expected;
        }
        fullyAccepted += allAccepted ? 1 : 0;
    }
    CHECK(mismatches == 0);
    // float32 and float16, each with int32 tile ids, all linear.
    CHECK(fullyAccepted == 2);
    for (int32_t pos = 0; pos < 5; ++pos)
    {
        io[pos] = makeStatic(makeDims({1}), pos == nbInputs - 1 ? DataType::kINT32 : DataType::kFLOAT);
    }
    CHECK(b->supportsFormatCombination(0, io, nbInputs, 1));
    CHECK(!b->supportsFormatCombination(-1, io, nbInputs, 1));
    CHECK(!b->supportsFormatCombination(nbPositions, io, nbInputs, 1));
    CHECK(!b->supportsFormatCombination(0, io, nbInputs - 1, 1));
    CHECK(!b->supportsFormatCombination(0, io, nbInputs + 1, 1));
    CHECK(!b->supportsFormatCombination(0, io, nbInputs, 2));
}

//! One dimension expression: a constant where `name` is null, else a symbol.
struct DimSpec
{
    char const* name;
    int64_t value;

    DimSpec(char const* symbol) // NOLINT: implicit, so shapes read {"N", 8, "H", "W"}
        : name(symbol)
        , value(0)
    {
    }

    DimSpec(int value) // NOLINT
        : name(nullptr)
        , value(value)
    {
    }
};

DimsExprs exprs(m2ae_test::ExprStore& store, std::initializer_list<DimSpec> dims)
{
    DimsExprs out{};
    out.nbDims = static_cast<int32_t>(dims.size());
    int32_t i = 0;
    for (DimSpec const& dim : dims)
    {
        out.d[i++] = dim.name != nullptr ? store.symbolic(dim.name) : store.constant(dim.value);
    }
    return out;
}

//! getOutputShapes; outputs[0] receives the shape. Returns its status.
int32_t outputShapes(IPluginV3& plugin, DimsExprs const* inputs, int32_t nbInputs, DimsExprs* outputs,
    int32_t nbOutputs, m2ae_test::ExprBuilder& builder)
{
    return build(plugin)->getOutputShapes(inputs, nbInputs, nullptr, 0, outputs, nbOutputs, builder);
}

bool isConstant(IDimensionExpr const* e, int64_t value)
{
    return e != nullptr && e->isConstant() && e->getConstantValue() == value;
}

bool isSymbol(m2ae_test::ExprStore const& store, IDimensionExpr const* e, char const* name)
{
    return e != nullptr && !e->isConstant() && store.text(*e) == name;
}

//! Input shapes getOutputShapes must refuse, with a log; a failure names the case's index.
void checkRefused(IPluginV3& plugin, std::vector<std::vector<DimsExprs>> const& cases, m2ae_test::ExprBuilder& builder)
{
    std::string const section = gSection;
    for (std::size_t i = 0; i < cases.size(); ++i)
    {
        gSection = section + ", refused case " + std::to_string(i);
        std::vector<DimsExprs> const& in = cases[i];
        DimsExprs out[1] = {};
        CHECK(logs([&] { CHECK(outputShapes(plugin, in.data(), static_cast<int32_t>(in.size()), out, 1, builder) != 0); }));
    }
    gSection = section;
}

//! A gather plugin whose window side is tile + 2*halo = `side`.
void testGatherShapes(IPluginV3& plugin, int64_t side)
{
    gSection = "gather getOutputShapes, side " + std::to_string(side);
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[2] = {exprs(s, {"N", "C", "H", "W"}), exprs(s, {"B"})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 2, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4);
        if (out[0].nbDims == 4)
        {
            CHECK(isSymbol(s, out[0].d[0], "B"));
            CHECK(isSymbol(s, out[0].d[1], "C"));
            CHECK(isConstant(out[0].d[2], side));
            CHECK(isConstant(out[0].d[3], side));
        }
        // The output passes the input dims through: no arithmetic on them.
        CHECK(s.operations.empty());
    }
    struct ConstCase
    {
        int n, c, h, w, b;
    };
    // B = 0 (no tile kept), C = 0, tiles larger than the image, many tiles.
    ConstCase const cases[] = {{2, 8, 5, 7, 9}, {1, 4, 3, 3, 0}, {1, 0, 4, 4, 2}, {3, 16, 64, 64, 1}, {1, 1, 1, 1, 1}};
    for (ConstCase const& k : cases)
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[2] = {exprs(s, {k.n, k.c, k.h, k.w}), exprs(s, {k.b})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 2, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4 && isConstant(out[0].d[0], k.b) && isConstant(out[0].d[1], k.c)
            && isConstant(out[0].d[2], side) && isConstant(out[0].d[3], side));
    }
    {
        // A static image, B from NonZero upstream.
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[2] = {exprs(s, {1, 8, 32, 32}), exprs(s, {"B"})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 2, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4 && isSymbol(s, out[0].d[0], "B") && isConstant(out[0].d[1], 8)
            && isConstant(out[0].d[2], side) && isConstant(out[0].d[3], side));
    }
    m2ae_test::ExprBuilder builder;
    auto& s = builder.store;
    DimsExprs const dense = exprs(s, {"N", "C", "H", "W"});
    DimsExprs const tiles = exprs(s, {"B"});
    checkRefused(plugin,
        {
            {exprs(s, {"C", "H", "W"}), tiles},
            {exprs(s, {"N", "C", "H", "W", "D"}), tiles},
            {dense, exprs(s, {})},
            {dense, exprs(s, {"B", 1})},
            {tiles, dense},
            {dense},
            {dense, tiles, tiles},
        },
        builder);
    DimsExprs const good[2] = {dense, tiles};
    DimsExprs out[2] = {};
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 2, out, 2, builder) != 0); }));
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 2, out, 0, builder) != 0); }));
}

void testScatterShapes(IPluginV3& plugin)
{
    gSection = "scatter getOutputShapes";
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {exprs(s, {"N", "C", "H", "W"}), exprs(s, {"B", "C", "T", "T"}), exprs(s, {"B"})};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4);
        char const* const names[] = {"N", "C", "H", "W"};
        for (int32_t i = 0; i < 4 && out[0].nbDims == 4; ++i)
        {
            CHECK(isSymbol(s, out[0].d[i], names[i]));
        }
        CHECK(s.operations.empty());
    }
    struct Case
    {
        std::initializer_list<DimSpec> base;
        std::initializer_list<DimSpec> values;
        std::initializer_list<DimSpec> tiles;
    };
    // Known extents that agree, or that the engine's shapes settle later.
    Case const accepted[] = {
        {{2, 3, 5, 7}, {4, 3, 4, 4}, {4}},
        {{2, 3, 5, 7}, {0, 3, 4, 4}, {0}},  // B = 0: out = base
        {{1, 3, 5, 7}, {1, 3, 8, 8}, {1}},  // one tile larger than the image
        {{1, 3, 5, 7}, {1, 3, 1, 1}, {1}},
        {{"N", 3, "H", "W"}, {"B", 3, 8, 8}, {"B"}},
        {{"N", 3, "H", "W"}, {"B", "C", 8, "T"}, {"B"}},
        {{"N", "C", "H", "W"}, {"B", 3, "T", "T"}, {0}},
        {{"N", 3, "H", "W"}, {"B", 3, kMaxSide, kMaxSide}, {"B"}},
    };
    for (Case const& k : accepted)
    {
        m2ae_test::ExprBuilder builder;
        auto& s = builder.store;
        DimsExprs in[3] = {exprs(s, k.base), exprs(s, k.values), exprs(s, k.tiles)};
        DimsExprs out[1] = {};
        CHECK(outputShapes(plugin, in, 3, out, 1, builder) == 0);
        CHECK(out[0].nbDims == 4);
        for (int32_t i = 0; i < 4 && out[0].nbDims == 4; ++i)
        {
            IDimensionExpr const* d = out[0].d[i];
            CHECK(d == in[0].d[i]);
        }
    }
    m2ae_test::ExprBuilder builder;
    auto& s = builder.store;
    DimsExprs const base = exprs(s, {"N", "C", "H", "W"});
    DimsExprs const values = exprs(s, {"B", "C", "T", "T"});
    DimsExprs const tiles = exprs(s, {"B"});
    checkRefused(plugin,
        {
            // Known extents that contradict: C, B, a non-square or empty tile.
            {exprs(s, {2, 3, 5, 7}), exprs(s, {4, 2, 4, 4}), exprs(s, {4})},
            {exprs(s, {2, 3, 5, 7}), exprs(s, {4, 3, 4, 4}), exprs(s, {5})},
            {exprs(s, {2, 3, 5, 7}), exprs(s, {4, 3, 4, 5}), exprs(s, {4})},
            {exprs(s, {2, 3, 5, 7}), exprs(s, {0, 3, 0, 0}), exprs(s, {0})},
            {base, exprs(s, {"B", "C", 0, "T"}), tiles},
            {base, exprs(s, {"B", "C", "T", 0}), tiles},
            {base, exprs(s, {"B", "C", kMaxSide + 1, kMaxSide + 1}), tiles},
            // Ranks.
            {exprs(s, {"C", "H", "W"}), values, tiles},
            {base, exprs(s, {"C", "T", "T"}), tiles},
            {base, exprs(s, {"B", "C", "T", "T", "X"}), tiles},
            {base, exprs(s, {"C", "K"}), tiles},
            {base, values, exprs(s, {})},
            {base, values, exprs(s, {"B", 1})},
            // Counts.
            {base, values},
            {base, values, tiles, tiles},
        },
        builder);
    DimsExprs const good[3] = {base, values, tiles};
    DimsExprs out[2] = {};
    CHECK(logs([&] { CHECK(outputShapes(plugin, good, 3, out, 2, builder) != 0); }));
}

//! configurePlugin, getWorkspaceSize and onShapeChange on one op's tensors.
struct OpShapes
{
    int32_t nbInputs;
    std::vector<DynamicPluginTensorDesc> buildIn; // build time, -1 where dynamic
    DynamicPluginTensorDesc buildOut;
    std::vector<std::vector<Dims>> goodRuntime;      // inputs, then the output
    std::vector<std::vector<Dims>> badRuntime;
    std::vector<std::vector<Dims>> badBuildRanks;    // inputs
    std::vector<std::vector<Dims>> buildAgreeing;    // inputs with -1s: accepted
    std::vector<std::vector<Dims>> buildDisagreeing; // known extents that contradict
};

void checkConfigureAndShapeChange(IPluginV3& plugin, OpShapes const& shapes, DataType type)
{
    int32_t const n = shapes.nbInputs;
    IPluginV3OneBuild* b = build(plugin);
    IPluginV3OneRuntime* r = runtime(plugin);
    CHECK(b->configurePlugin(shapes.buildIn.data(), n, &shapes.buildOut, 1) == 0);
    CHECK(b->getWorkspaceSize(shapes.buildIn.data(), n, &shapes.buildOut, 1) == 0);
    CHECK(logs([&] { CHECK(b->configurePlugin(shapes.buildIn.data(), n - 1, &shapes.buildOut, 1) != 0); }));
    CHECK(logs([&] { CHECK(b->configurePlugin(shapes.buildIn.data(), n, &shapes.buildOut, 0) != 0); }));
    auto buildDescs = [&](std::vector<Dims> const& dims, DynamicPluginTensorDesc* in) {
        for (int32_t i = 0; i < n; ++i)
        {
            in[i] = makeStatic(dims[i], i == n - 1 ? DataType::kINT32 : type);
        }
    };
    DynamicPluginTensorDesc buildIn[3];
    for (auto const& dims : shapes.badBuildRanks)
    {
        buildDescs(dims, buildIn);
        CHECK(logs([&] { CHECK(b->configurePlugin(buildIn, n, &shapes.buildOut, 1) != 0); }));
    }
    for (auto const& dims : shapes.buildAgreeing)
    {
        buildDescs(dims, buildIn);
        CHECK(b->configurePlugin(buildIn, n, &shapes.buildOut, 1) == 0);
    }
    for (auto const& dims : shapes.buildDisagreeing)
    {
        buildDescs(dims, buildIn);
        CHECK(logs([&] { CHECK(b->configurePlugin(buildIn, n, &shapes.buildOut, 1) != 0); }));
    }
    auto runtimeDescs = [&](std::vector<Dims> const& dims, PluginTensorDesc* in, PluginTensorDesc* out) {
        for (int32_t i = 0; i < n; ++i)
        {
            in[i] = makeDesc(dims[i], i == n - 1 ? DataType::kINT32 : type);
        }
        *out = makeDesc(dims[n], type);
    };
    for (auto const& dims : shapes.goodRuntime)
    {
        PluginTensorDesc in[3];
        PluginTensorDesc out;
        runtimeDescs(dims, in, &out);
        CHECK(r->onShapeChange(in, n, &out, 1) == 0);
    }
    for (auto const& dims : shapes.badRuntime)
    {
        PluginTensorDesc in[3];
        PluginTensorDesc out;
        runtimeDescs(dims, in, &out);
        CHECK(logs([&] { CHECK(r->onShapeChange(in, n, &out, 1) != 0); }));
    }
    PluginTensorDesc in[3];
    PluginTensorDesc out;
    runtimeDescs(shapes.goodRuntime.front(), in, &out);
    CHECK(logs([&] { CHECK(r->onShapeChange(in, n - 1, &out, 1) != 0); }));
    CHECK(logs([&] { CHECK(r->onShapeChange(in, n, &out, 0) != 0); }));
}

//! The gather plugin has tile 8, halo 1: out [B, C, 10, 10].
void testConfigureAndShapeChange(IPluginV3& gather, IPluginV3& scatter)
{
    for (DataType type : {DataType::kFLOAT, DataType::kHALF})
    {
        char const* const typeName = type == DataType::kFLOAT ? "fp32" : "fp16";
        gSection = std::string("gather configure/onShapeChange ") + typeName;
        OpShapes g;
        g.nbInputs = 2;
        g.buildIn = {
            makeDynamic(makeDims({-1, 8, -1, -1}), makeDims({1, 8, 16, 16}), makeDims({2, 8, 64, 64}), type),
            makeDynamic(makeDims({-1}), makeDims({0}), makeDims({128}), DataType::kINT32),
        };
        g.buildOut = makeDynamic(makeDims({-1, 8, 10, 10}), makeDims({0, 8, 10, 10}), makeDims({128, 8, 10, 10}), type);
        g.goodRuntime = {
            {makeDims({2, 8, 5, 7}), makeDims({9}), makeDims({9, 8, 10, 10})},
            {makeDims({1, 8, 5, 7}), makeDims({0}), makeDims({0, 8, 10, 10})},
            {makeDims({2, 8, 64, 64}), makeDims({128}), makeDims({128, 8, 10, 10})},
        };
        g.badRuntime = {
            {makeDims({8, 5, 7}), makeDims({9}), makeDims({9, 8, 10, 10})},
            {makeDims({2, 8, 5, 7, 1}), makeDims({9}), makeDims({9, 8, 10, 10})},
            {makeDims({2, 8, 5, 7}), makeDims({9, 1}), makeDims({9, 8, 10, 10})},
            {makeDims({2, 8, 5, 7}), makeDims({}), makeDims({9, 8, 10, 10})},
        };
        g.badBuildRanks = {
            {makeDims({8, 5, 7}), makeDims({9})},
            {makeDims({2, 8, 5, 7}), makeDims({9, 1})},
            {makeDims({2, 8, 5, 7}), makeDims({})},
        };
        g.buildAgreeing = {
            {makeDims({-1, -1, -1, -1}), makeDims({-1})},
            {makeDims({1, 8, 16, 16}), makeDims({4})},
        };
        checkConfigureAndShapeChange(gather, g, type);

        gSection = std::string("scatter configure/onShapeChange ") + typeName;
        OpShapes s;
        s.nbInputs = 3;
        s.buildIn = {
            makeDynamic(makeDims({-1, 3, -1, -1}), makeDims({1, 3, 16, 16}), makeDims({2, 3, 64, 64}), type),
            makeDynamic(makeDims({-1, 3, 8, 8}), makeDims({0, 3, 8, 8}), makeDims({128, 3, 8, 8}), type),
            makeDynamic(makeDims({-1}), makeDims({0}), makeDims({128}), DataType::kINT32),
        };
        s.buildOut = s.buildIn[0];
        s.goodRuntime = {
            {makeDims({2, 3, 5, 7}), makeDims({4, 3, 4, 4}), makeDims({4}), makeDims({2, 3, 5, 7})},
            {makeDims({1, 3, 5, 7}), makeDims({0, 3, 4, 4}), makeDims({0}), makeDims({1, 3, 5, 7})},
            {makeDims({1, 3, 5, 7}), makeDims({1, 3, 8, 8}), makeDims({1}), makeDims({1, 3, 5, 7})},
            {makeDims({1, 3, 5, 7}), makeDims({0, 3, kMaxSide, kMaxSide}), makeDims({0}), makeDims({1, 3, 5, 7})},
        };
        s.badRuntime = {
            {makeDims({2, 3, 5, 7}), makeDims({4, 2, 4, 4}), makeDims({4}), makeDims({2, 3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({4, 3, 4, 4}), makeDims({5}), makeDims({2, 3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({4, 3, 4, 5}), makeDims({4}), makeDims({2, 3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({0, 3, 0, 0}), makeDims({0}), makeDims({2, 3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({1, 3, kMaxSide + 1, kMaxSide + 1}), makeDims({1}),
                makeDims({2, 3, 5, 7})},
            {makeDims({3, 5, 7}), makeDims({4, 3, 4, 4}), makeDims({4}), makeDims({3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({4, 3, 16}), makeDims({4}), makeDims({2, 3, 5, 7})},
            {makeDims({2, 3, 5, 7}), makeDims({4, 3, 4, 4}), makeDims({4, 1}), makeDims({2, 3, 5, 7})},
        };
        s.badBuildRanks = {
            {makeDims({3, 5, 7}), makeDims({4, 3, 4, 4}), makeDims({4})},
            {makeDims({2, 3, 5, 7}), makeDims({3, 4}), makeDims({4})},
            {makeDims({2, 3, 5, 7}), makeDims({4, 3, 4, 4}), makeDims({4, 1})},
        };
        s.buildAgreeing = {
            {makeDims({-1, -1, -1, -1}), makeDims({-1, -1, -1, -1}), makeDims({-1})},
            {makeDims({-1, 3, -1, -1}), makeDims({-1, -1, 8, -1}), makeDims({4})},
            {makeDims({-1, 3, -1, -1}), makeDims({4, 3, 8, 8}), makeDims({-1})},
        };
        s.buildDisagreeing = {
            {makeDims({-1, 3, -1, -1}), makeDims({-1, 2, 8, 8}), makeDims({-1})},
            {makeDims({-1, 3, -1, -1}), makeDims({4, 3, 8, 8}), makeDims({5})},
            {makeDims({-1, 3, -1, -1}), makeDims({-1, 3, 8, 4}), makeDims({-1})},
            {makeDims({-1, 3, -1, -1}), makeDims({-1, 3, 0, -1}), makeDims({-1})},
            {makeDims({-1, 3, -1, -1}), makeDims({-1, 3, -1, kMaxSide + 1}), makeDims({-1})},
        };
        checkConfigureAndShapeChange(scatter, s, type);
    }
}

//! The text of the last warning or error logged; empty when none was.
std::string lastLog()
{
    return gLoggerFinder.logger.messages.empty() ? std::string() : gLoggerFinder.logger.messages.back();
}

//! enqueue where the launchers return before touching the device: B = 0 with the
//! scatter in place, or arguments they refuse. No buffer is read, so one placeholder
//! stands for all. The gather plugin has tile 8, halo 1.
void testEnqueueWithoutDevice(IPluginV3& gather, IPluginV3& scatter)
{
    float placeholder = 0.0F;
    void const* const inputs[3] = {&placeholder, &placeholder, &placeholder};
    void* const outputs[1] = {&placeholder};
    IPluginV3OneRuntime* g = runtime(gather);
    IPluginV3OneRuntime* s = runtime(scatter);
    for (DataType type : {DataType::kFLOAT, DataType::kHALF})
    {
        gSection = std::string("enqueue without device work ") + (type == DataType::kFLOAT ? "fp32" : "fp16");
        PluginTensorDesc gatherIn[2]
            = {makeDesc(makeDims({2, 8, 5, 7}), type), makeDesc(makeDims({0}), DataType::kINT32)};
        PluginTensorDesc const gatherOut = makeDesc(makeDims({0, 8, 10, 10}), type);
        CHECK(g->enqueue(gatherIn, &gatherOut, inputs, outputs, nullptr, nullptr) == 0);

        PluginTensorDesc scatterIn[3] = {makeDesc(makeDims({2, 3, 5, 7}), type),
            makeDesc(makeDims({0, 3, 4, 4}), type), makeDesc(makeDims({0}), DataType::kINT32)};
        PluginTensorDesc const scatterOut = scatterIn[0];
        CHECK(s->enqueue(scatterIn, &scatterOut, inputs, outputs, nullptr, nullptr) == 0);
        // The tile side is values' last extent, whatever dim 2 says: a side of 0 or one
        // over the largest window reaches the launcher, which refuses it.
        scatterIn[1].dims = makeDims({0, 3, 0, 4});
        CHECK(s->enqueue(scatterIn, &scatterOut, inputs, outputs, nullptr, nullptr) == 0);
        for (int64_t side : {int64_t{0}, int64_t{kMaxSide} + 1})
        {
            scatterIn[1].dims = makeDims({0, 3, 4, side});
            CHECK(logs([&] { CHECK(s->enqueue(scatterIn, &scatterOut, inputs, outputs, nullptr, nullptr) != 0); }));
            CHECK(lastLog().find("MaskedScatter") != std::string::npos
                && lastLog().find("kernel launch failed") != std::string::npos);
        }
    }
    gSection = "enqueue, a type the kernels lack";
    PluginTensorDesc gatherIn[2]
        = {makeDesc(makeDims({2, 8, 5, 7}), DataType::kINT8), makeDesc(makeDims({0}), DataType::kINT32)};
    PluginTensorDesc const gatherOut = makeDesc(makeDims({0, 8, 10, 10}), DataType::kINT8);
    CHECK(logs([&] { CHECK(g->enqueue(gatherIn, &gatherOut, inputs, outputs, nullptr, nullptr) != 0); }));
}

void testPlugins()
{
    m2ae::MaskedGatherCreator gatherCreator;
    m2ae::MaskedScatterCreator scatterCreator;
    PluginPtr gather = createGather(gatherCreator, 8, 1, TensorRTPhase::kBUILD);
    PluginPtr scatter = create(scatterCreator, {}, TensorRTPhase::kBUILD);
    gSection = "plugins created";
    CHECK(gather != nullptr && scatter != nullptr);
    if (gather == nullptr || scatter == nullptr)
    {
        return;
    }
    for (IPluginV3* plugin : {gather.get(), scatter.get()})
    {
        int32_t const nbInputs = plugin == gather.get() ? 2 : 3;
        gSection = std::string(core(*plugin)->getPluginName()) + " capabilities, types, formats";
        checkCapabilities(*plugin);
        checkOutputTypes(*plugin, nbInputs);
        checkFormats(*plugin, nbInputs);
    }
    testGatherShapes(*gather, 10);
    // The window side follows the attributes, in clones too.
    struct TileHalo
    {
        int32_t tile;
        int32_t halo;
    };
    for (TileHalo const th : {TileHalo{16, 0}, TileHalo{1, 3}})
    {
        PluginPtr other = createGather(gatherCreator, th.tile, th.halo, TensorRTPhase::kBUILD);
        PluginPtr copy(other != nullptr ? other->clone() : nullptr);
        CHECK(copy != nullptr);
        other.reset();
        if (copy != nullptr)
        {
            testGatherShapes(*copy, th.tile + 2 * th.halo);
        }
    }
    testScatterShapes(*scatter);
    testConfigureAndShapeChange(*gather, *scatter);
    testEnqueueWithoutDevice(*gather, *scatter);

    // Plugins of a deserialized engine answer the runtime calls too.
    gSection = "runtime-phase plugins";
    PluginPtr runtimeGather = createGather(gatherCreator, 4, 2, TensorRTPhase::kRUNTIME);
    CHECK(runtimeGather != nullptr && runtime(*runtimeGather) != nullptr);
    if (runtimeGather != nullptr)
    {
        PluginTensorDesc in[2]
            = {makeDesc(makeDims({1, 3, 9, 9}), DataType::kHALF), makeDesc(makeDims({5}), DataType::kINT32)};
        PluginTensorDesc out = makeDesc(makeDims({5, 3, 8, 8}), DataType::kHALF);
        CHECK(runtime(*runtimeGather)->onShapeChange(in, 2, &out, 1) == 0);
        CHECK(serialized(*runtimeGather) == gatherFields(4, 2));
    }
    PluginPtr runtimeScatter = create(scatterCreator, {}, TensorRTPhase::kRUNTIME);
    CHECK(runtimeScatter != nullptr && runtime(*runtimeScatter) != nullptr);
    if (runtimeScatter != nullptr)
    {
        PluginTensorDesc in[3] = {makeDesc(makeDims({1, 3, 9, 9}), DataType::kHALF),
            makeDesc(makeDims({2, 3, 4, 4}), DataType::kHALF), makeDesc(makeDims({2}), DataType::kINT32)};
        PluginTensorDesc out = in[0];
        CHECK(runtime(*runtimeScatter)->onShapeChange(in, 3, &out, 1) == 0);
        CHECK(serialized(*runtimeScatter).empty());
    }
}

} // namespace

int main()
{
    m2ae::setLoggerFinder(&gLoggerFinder);
    testGatherCreator();
    testScatterCreator();
    testSerializationCloneAttach();
    testPlugins();
    std::printf("%d checks, %d failed\n", gChecks, gFailures);
    return gFailures == 0 ? 0 : 1;
}
