using System.Text.Json.Nodes;
using YamlDotNet.RepresentationModel;

namespace HandoffDapr.Service.Tests.DaprFiles;

/// <summary>Reads the repository's YAML (components, dapr.yaml, k8s) and checks it against what Dapr documents.</summary>
public static class DaprFiles
{
    // Field sets from dapr/components-contrib metadata.yaml files (state/redis, pubsub/redis, bindings/http,
    // secretstores/local/file) plus the runtime's state store fields (actorStateStore, keyPrefix) from dapr/docs.
    public static readonly IReadOnlyDictionary<string, HashSet<string>> DocumentedMetadata = new Dictionary<string, HashSet<string>>
    {
        ["state.redis"] =
        [
            "redisHost", "redisPort", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword", "enableTLS",
            "insecureSkipTLSVerify", "clientCert", "clientKey", "failover", "sentinelMasterName", "redeliverInterval",
            "processingTimeout", "redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval",
            "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
            "idleCheckFrequency", "idleTimeout", "ttlInSeconds", "queryIndexes", "useEntraID", "actorStateStore", "keyPrefix",
        ],
        ["pubsub.redis"] =
        [
            "redisHost", "redisPort", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword", "consumerID",
            "enableTLS", "insecureSkipTLSVerify", "clientCert", "clientKey", "redeliverInterval", "processingTimeout",
            "queueDepth", "concurrency", "redisType", "redisDB", "redisMaxRetries", "redisMinRetryInterval",
            "redisMaxRetryInterval", "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge",
            "minIdleConns", "idleCheckFrequency", "idleTimeout", "failover", "sentinelMasterName", "maxLenApprox", "streamTTL",
            "useEntraID",
        ],
        ["bindings.http"] =
        [
            "url", "responseTimeout", "maxResponseBodySize", "MTLSRootCA", "MTLSClientCert", "MTLSClientKey", "MTLSRenegotiation",
            "securityToken", "securityTokenHeader", "errorIfNot2XX",
        ],
        ["secretstores.local.file"] = ["secretsFile", "nestedSeparator", "multiValued"],
    };

    // dapr/cli pkg/standalone/run.go and pkg/runfileconfig/run_file_config.go yaml tags.
    public static readonly HashSet<string> RunFileAppFields =
    [
        "appID", "appDirPath", "appChannelAddress", "appPort", "daprHTTPPort", "daprGRPCPort", "profilePort", "command",
        "metricsPort", "unixDomainSocket", "daprInternalGRPCPort", "configFilePath", "appProtocol", "apiListenAddresses",
        "enableProfiling", "logLevel", "appMaxConcurrency", "placementHostAddress", "resourcesPath", "resourcesPaths", "appSSL",
        "maxBodySize", "readBufferSize", "enableAppHealthCheck", "appHealthCheckPath", "appHealthProbeInterval",
        "appHealthProbeTimeout", "appHealthThreshold", "enableApiLogging", "runtimePath", "env", "daprdLogDestination",
        "appLogDestination", "schedulerHostAddress", "containerImage", "containerImagePullPolicy", "createService",
    ];

    public static string RepositoryRoot => Security.WebhookSignatureTests.RepositoryRoot();

    public static IEnumerable<(string File, YamlMappingNode Document)> Documents(string relativeFolderOrFile)
    {
        var path = Path.Combine(RepositoryRoot, relativeFolderOrFile);
        IEnumerable<string> files = File.Exists(path) ? [path] : Directory.GetFiles(path, "*.yaml").Order();
        foreach (var file in files)
        {
            var stream = new YamlStream();
            using var reader = new StreamReader(file);
            stream.Load(reader);
            foreach (var document in stream.Documents)
            {
                yield return (Path.GetRelativePath(RepositoryRoot, file), (YamlMappingNode)document.RootNode);
            }
        }
    }

    public static string? Scalar(YamlNode node, params string[] path)
    {
        var current = node;
        foreach (var key in path)
        {
            if (current is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out current!))
            {
                return null;
            }
        }

        return (current as YamlScalarNode)?.Value;
    }

    public static YamlNode? Node(YamlNode node, params string[] path)
    {
        var current = node;
        foreach (var key in path)
        {
            if (current is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out current!))
            {
                return null;
            }
        }

        return current;
    }

    /// <summary>The metadata names of a component that Dapr does not document for its type: empty when all is well.</summary>
    public static IReadOnlyList<string> UndocumentedMetadata(YamlMappingNode component)
    {
        var type = Scalar(component, "spec", "type") ?? string.Empty;
        if (!DocumentedMetadata.TryGetValue(type, out var documented))
        {
            return [$"unknown component type '{type}'"];
        }

        var problems = new List<string>();
        foreach (var item in ((YamlSequenceNode?)Node(component, "spec", "metadata"))?.Children ?? [])
        {
            var name = Scalar(item, "name") ?? "(no name)";
            if (!documented.Contains(name))
            {
                problems.Add(name);
            }

            var hasValue = Node(item, "value") is not null;
            var hasSecret = Node(item, "secretKeyRef") is not null;
            if (hasValue == hasSecret)
            {
                problems.Add($"{name}: needs exactly one of value or secretKeyRef");
            }
        }

        return problems;
    }

    public static JsonNode AppSettings() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(RepositoryRoot, "src", "HandoffDapr.Service", "appsettings.json")))!;

    public static JsonNode LaunchSettings() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(RepositoryRoot, "src", "HandoffDapr.Service", "Properties", "launchSettings.json")))!;

    /// <summary>A Go duration as Dapr's YAML carries them ("500ms", "15s", "1m30s", "2h").</summary>
    public static TimeSpan GoDuration(string text)
    {
        var total = TimeSpan.Zero;
        foreach (System.Text.RegularExpressions.Match part in System.Text.RegularExpressions.Regex.Matches(text, @"(\d+(?:\.\d+)?)(ms|s|m|h)"))
        {
            var value = double.Parse(part.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            total += part.Groups[2].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(value),
                "s" => TimeSpan.FromSeconds(value),
                "m" => TimeSpan.FromMinutes(value),
                _ => TimeSpan.FromHours(value),
            };
        }

        return total > TimeSpan.Zero ? total : throw new FormatException($"not a Go duration: {text}");
    }

    /// <summary>
    /// The retry, circuit breaker and timeout the resiliency file gives calls to <paramref name="actorType"/>, for the fake
    /// sidecar (without the retry's waits), or null when it gives none. Only a <c>consecutiveFailures >= N</c> trip is read.
    /// </summary>
    public static HandoffDapr.FakeSidecar.ActorCallPolicy? ActorCallPolicy(string resiliencyFile, string actorType)
    {
        var (_, resiliency) = Documents(resiliencyFile).Single();
        if (Node(resiliency, "spec", "targets", "actors", actorType) is not { } target)
        {
            return null;
        }

        static int Int(string? text, int fallback) => text is null ? fallback : int.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
        var retries = Scalar(target, "retry") is { } retry ? Int(Scalar(resiliency, "spec", "policies", "retries", retry, "maxRetries"), -1) : 0;
        var policy = new HandoffDapr.FakeSidecar.ActorCallPolicy(MaxRetries: retries < 0 ? int.MaxValue : retries);
        if (Scalar(target, "timeout") is { } timeout)
        {
            // A named policy (spec.policies.timeouts) or a duration written in place.
            policy = policy with { CallTimeout = GoDuration(Scalar(resiliency, "spec", "policies", "timeouts", timeout) ?? timeout) };
        }

        if (Scalar(target, "circuitBreaker") is not { } name)
        {
            return policy;
        }

        var breaker = Node(resiliency, "spec", "policies", "circuitBreakers", name)!;
        var trip = System.Text.RegularExpressions.Regex.Match(Scalar(breaker, "trip") ?? "", @"^\s*consecutiveFailures\s*>=?\s*(\d+)\s*$");
        if (!trip.Success)
        {
            throw new FormatException($"{resiliencyFile}: breaker {name}: only 'consecutiveFailures >= N' is modelled");
        }

        return policy with
        {
            BreakerConsecutiveFailures = int.Parse(trip.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) + (Scalar(breaker, "trip")!.Contains(">=") ? 0 : 1),
            BreakerTimeout = GoDuration(Scalar(breaker, "timeout") ?? "60s"),
            BreakerInterval = Scalar(breaker, "interval") is { } interval ? GoDuration(interval) : TimeSpan.Zero,
            BreakerMaxRequests = Int(Scalar(breaker, "maxRequests"), 1),
            // daprd keys the breaker by type only for the scope "type"; "id", "both" and none key it by type and id.
            BreakerPerActorId = Scalar(target, "circuitBreakerScope") != "type",
        };
    }

    /// <summary>Whether the resiliency file gives the component an inbound (delivery to the app) retry policy.</summary>
    public static bool HasInboundRetry(string resiliencyFile, string component) =>
        Documents(resiliencyFile).Any(d => Scalar(d.Document, "spec", "targets", "components", component, "inbound", "retry") is not null);
}
