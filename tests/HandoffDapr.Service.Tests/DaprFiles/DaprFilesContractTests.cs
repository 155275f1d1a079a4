using HandoffDapr.Service.Configuration;
using YamlDotNet.RepresentationModel;
using static HandoffDapr.Service.Tests.DaprFiles.DaprFiles;

namespace HandoffDapr.Service.Tests.DaprFiles;

/// <summary>The files a platform team runs (components/, dapr.yaml, k8s/) agree with Dapr's documented fields and with the code.</summary>
public sealed class DaprFilesContractTests
{
    public static TheoryData<string> ComponentFolders => new() { "components", "k8s" };

    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Every_component_uses_only_documented_metadata_fields(string folder)
    {
        var components = Components(folder).ToList();

        Assert.NotEmpty(components);
        foreach (var (file, component) in components)
        {
            Assert.Equal("dapr.io/v1alpha1", Scalar(component, "apiVersion"));
            Assert.Equal("v1", Scalar(component, "spec", "version"));
            var problems = UndocumentedMetadata(component);
            Assert.True(problems.Count == 0, $"{file} {Scalar(component, "metadata", "name")}: {string.Join(", ", problems)}");
        }
    }

    /// <summary>
    /// statestore.yaml's comment and docs/dapr.md's row for it say what the actor keeps in the store (an operator sizing
    /// or cleaning Redis goes by them): every state key the actor writes, none left out.
    /// </summary>
    [Fact]
    public void The_state_store_component_and_its_documentation_name_every_key_the_actor_keeps()
    {
        var keys = typeof(Service.DaprHost.HandoffRunActor)
            .GetFields(System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)
            .Where(field => field.IsLiteral && field.Name.EndsWith("Key", StringComparison.Ordinal))
            .Select(field => (string)field.GetRawConstantValue()!)
            .ToList();
        var comment = File.ReadLines(Path.Combine(RepositoryRoot, "components", "statestore.yaml")).First();
        var row = File.ReadLines(Path.Combine(RepositoryRoot, "docs", "dapr.md")).Single(line => line.StartsWith("| `statestore.yaml`", StringComparison.Ordinal));

        Assert.Equal(9, keys.Count); // replaced_snapshots (events carry no order) is the ninth
        Assert.Equal([], keys.Where(key => !System.Text.RegularExpressions.Regex.IsMatch(comment, $@"\b{key}\b")));
        Assert.Equal([], keys.Where(key => !row.Contains($"`{key}`", StringComparison.Ordinal)));
    }

    [Fact]
    public void Checker_rejects_a_misspelled_field_and_a_field_with_both_or_neither_value_and_secret()
    {
        var resource = Resource("""
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: { name: broken }
            spec:
              type: state.redis
              version: v1
              metadata:
                - name: redisHosts
                  value: localhost:6379
                - name: redisPassword
                  value: x
                  secretKeyRef: { name: a, key: b }
                - name: redisDB
            """);

        var problems = UndocumentedMetadata(resource);

        Assert.Contains("redisHosts", problems);
        Assert.Contains(problems, p => p.StartsWith("redisPassword", StringComparison.Ordinal));
        Assert.Contains("redisDB: needs exactly one of value or secretKeyRef", problems);
    }

    /// <summary>
    /// A component type or resource kind the checkers have no list for is refused whole, not passed as having no
    /// undocumented field: a misspelt type (which daprd refuses to load) or kind would otherwise pass every check.
    /// </summary>
    [Fact]
    public void Checker_rejects_a_component_type_and_a_resource_kind_it_has_no_list_for()
    {
        var component = Resource("""
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: { name: misspelt }
            spec:
              type: secretstores.local.fil
              version: v1
              metadata:
                - name: secretsFile
                  value: secrets.json
            """);
        var resource = Resource("""
            apiVersion: dapr.io/v1alpha1
            kind: Componnet
            metadata: { name: misspelt }
            """);

        Assert.Equal(["unknown component type 'secretstores.local.fil'"], UndocumentedMetadata(component));
        Assert.Equal(["unknown kind 'Componnet'"], UndocumentedRootFields(resource));
    }

    /// <summary>
    /// The field lists are Dapr 1.16's (docs/dapr.md says so, and pub/sub's streamTTL needs 1.16): a field that only a later
    /// components-contrib reads (redisPort and insecureSkipTLSVerify came with v1.17.0 and v1.18.0) is dropped by a 1.16
    /// daprd without a word, so the check refuses it.
    /// </summary>
    [Theory]
    [InlineData("state.redis", "redisPort")]
    [InlineData("state.redis", "insecureSkipTLSVerify")]
    [InlineData("pubsub.redis", "redisPort")]
    [InlineData("pubsub.redis", "insecureSkipTLSVerify")]
    public void Checker_rejects_a_field_dapr_1_16_does_not_read(string type, string field)
    {
        var resource = Resource($$"""
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: { name: newer }
            spec:
              type: {{type}}
              version: v1
              metadata:
                - name: {{field}}
                  value: "6380"
            """);

        Assert.Equal([field], UndocumentedMetadata(resource));
    }

    /// <summary>
    /// Handoff:RunRetention saves actor state with ttlInSeconds, which daprd refuses unless its ActorStateTTL preview
    /// feature is on (pkg/actors/api/transactional.go): the Configuration each deployment hands daprd (dapr.yaml's
    /// configFilePath, the k8s deployment's dapr.io/config) must turn it on. The Dapr-mode tests' fake sidecar reads
    /// components/config.yaml for it; this holds k8s to the same.
    /// </summary>
    [Theory]
    [InlineData("components/config.yaml")]
    [InlineData("k8s/configuration.yaml")]
    public void The_configuration_daprd_runs_with_turns_on_actor_state_ttl(string file)
    {
        Assert.True(DaprFiles.EnablesFeature(file, "ActorStateTTL"));
    }

    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Exactly_one_component_is_the_actor_state_store(string folder)
    {
        var actorStores = Components(folder)
            .Where(c => ((YamlSequenceNode?)Node(c.Document, "spec", "metadata"))?.Children
                .Any(m => Scalar(m, "name") == "actorStateStore" && Scalar(m, "value") == "true") == true)
            .ToList();

        var store = Assert.Single(actorStores);
        Assert.Equal(AppSettings()["Handoff"]!["Dapr"]!["StateStoreName"]!.GetValue<string>(), Scalar(store.Document, "metadata", "name"));
    }

    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Components_the_code_uses_exist_with_the_right_types(string folder)
    {
        var byName = Components(folder).ToDictionary(c => Scalar(c.Document, "metadata", "name")!, c => Scalar(c.Document, "spec", "type"));
        var settings = AppSettings()["Handoff"]!;

        Assert.Equal("pubsub.redis", byName[settings["Dapr"]!["PubSubName"]!.GetValue<string>()]);
        Assert.Equal("state.redis", byName[settings["Dapr"]!["StateStoreName"]!.GetValue<string>()]);
        foreach (var (_, integration) in settings["Integrations"]!.AsObject())
        {
            Assert.Equal("bindings.http", byName[integration!["Binding"]!.GetValue<string>()]);
        }
    }

    /// <summary>
    /// The run file and the deployment give the app its component names by environment, over <c>appsettings.json</c>:
    /// each names a component its folder has, of the type the app calls (what readiness and the launches look for).
    /// </summary>
    [Theory]
    [InlineData("dapr.yaml", "components")]
    [InlineData("k8s/deployment.yaml", "k8s")]
    public void Component_names_given_by_environment_exist_with_the_right_types(string file, string folder)
    {
        var byName = Components(folder).ToDictionary(c => Scalar(c.Document, "metadata", "name")!, c => Scalar(c.Document, "spec", "type"));
        var document = Documents(file).Single().Document;
        var env = file == "dapr.yaml"
            ? ((YamlMappingNode)Node(((YamlSequenceNode)Node(document, "apps")!).Children.Single(), "env")!).Children.ToDictionary(e => e.Key.ToString(), e => (string?)e.Value.ToString())
            : ((YamlSequenceNode)Node(((YamlSequenceNode)Node(document, "spec", "template", "spec", "containers")!).Children.Single(), "env")!).Children.ToDictionary(e => Scalar(e, "name")!, e => Scalar(e, "value"));

        var named = env.Where(e => e.Key == "Handoff__Dapr__PubSubName" || System.Text.RegularExpressions.Regex.IsMatch(e.Key, @"^Handoff__Integrations__\d+__Binding$")).ToList();

        Assert.Equal(2, named.Count(e => e.Key.EndsWith("__Binding", StringComparison.Ordinal)));
        Assert.All(named, e => Assert.Equal(e.Key.EndsWith("__Binding", StringComparison.Ordinal) ? "bindings.http" : "pubsub.redis", byName.GetValueOrDefault(e.Value!)));
    }

    /// <summary>
    /// Each provider's binding holds its key, hands every status code to the app, and has a resiliency target: a timeout
    /// and a breaker, never a retry (a launch retried blindly by the sidecar could start a second agent; the app retries,
    /// after looking for the first). A binding added without its target would go without timeout or breaker unnoticed.
    /// </summary>
    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Provider_bindings_hold_the_key_hand_status_codes_to_the_app_and_are_never_retried_by_the_sidecar(string folder)
    {
        var (_, resiliency) = Documents($"{folder}/resiliency.yaml").Single();
        var bindings = Components(folder).Where(c => Scalar(c.Document, "spec", "type") == "bindings.http").ToList();
        Assert.True(bindings.Count >= 2, $"{folder}: {bindings.Count} provider bindings");
        foreach (var (file, binding) in bindings)
        {
            var metadata = ((YamlSequenceNode)Node(binding, "spec", "metadata")!).Children.ToDictionary(m => Scalar(m, "name")!);
            Assert.True(Node(metadata["securityToken"], "secretKeyRef") is not null, $"{file}: the key must come from a secret");
            Assert.Equal("Authorization", Scalar(metadata["securityTokenHeader"], "value"));
            Assert.Equal("false", Scalar(metadata["errorIfNot2XX"], "value"));

            var name = Scalar(binding, "metadata", "name")!;
            var outbound = Node(resiliency, "spec", "targets", "components", name, "outbound");
            Assert.True(outbound is not null, $"{folder}/resiliency.yaml has no outbound target for {name}");
            Assert.NotNull(Scalar(outbound, "timeout"));
            Assert.NotNull(Scalar(outbound, "circuitBreaker"));
            Assert.Null(Node(outbound, "retry"));
        }
    }

    [Fact]
    public void Self_hosted_components_name_an_existing_secret_store_and_its_example_file()
    {
        var stores = Components("components").Where(c => Scalar(c.Document, "spec", "type")!.StartsWith("secretstores.", StringComparison.Ordinal))
            .ToDictionary(c => Scalar(c.Document, "metadata", "name")!);

        // Every component that reads a secretKeyRef, not only those that have an auth block: self-hosted daprd has no
        // default secret store, so one that names none gets no key.
        static bool ReadsSecrets(YamlMappingNode component) => ((YamlSequenceNode?)Node(component, "spec", "metadata"))
            ?.Children.Any(m => Node(m, "secretKeyRef") is not null) == true;
        var readingSecrets = Components("components")
            .Where(c => Node(c.Document, "auth") is not null || ReadsSecrets(c.Document)).ToList();
        Assert.True(readingSecrets.Count >= 2, $"{readingSecrets.Count} components read secrets");
        foreach (var (file, component) in readingSecrets)
        {
            var store = Scalar(component, "auth", "secretStore");
            Assert.True(store is not null && stores.ContainsKey(store), $"{file}: no existing auth.secretStore");
        }

        Assert.True(File.Exists(Path.Combine(RepositoryRoot, "components", "secrets.example.json")));
        var secretsFile = ((YamlSequenceNode)Node(stores.Values.Single().Document, "spec", "metadata")!).Children.Single(m => Scalar(m, "name") == "secretsFile");
        // Relative to the app directory, where daprd runs under `dapr run -f .`.
        Assert.Equal(
            Path.Combine(RepositoryRoot, "components", "secrets.json"),
            Path.GetFullPath(Path.Combine(RepositoryRoot, "src", "HandoffDapr.Service", Scalar(secretsFile, "value")!)));
        Assert.Contains("components/secrets.json", File.ReadAllText(Path.Combine(RepositoryRoot, ".gitignore")));
    }

    [Fact]
    public void Logs_the_run_file_writes_in_the_app_directory_stay_out_of_git_and_the_image_build()
    {
        // `dapr run -f .` writes daprd's and the app's logs to files in <appDirPath>/.dapr/logs by default (dapr/cli
        // pkg/runfileconfig/run_file_config.go GetLogsDir; pkg/standalone/run.go DefaultDaprdLogDest): here
        // src/HandoffDapr.Service/.dapr/logs, inside the repository and inside the Dockerfile's `COPY src/ src/`.
        var app = ((YamlSequenceNode)Node(Documents("dapr.yaml").Single().Document, "apps")!).Children.Single();
        Assert.StartsWith("./src/", Scalar(app, "appDirPath"), StringComparison.Ordinal);
        string[] Patterns(string file) => File.ReadAllLines(Path.Combine(RepositoryRoot, file)).Select(line => line.Trim()).ToArray();

        // A .gitignore pattern without a slash but the trailing one matches at any depth; a .dockerignore pattern is
        // anchored at the build context's root, so only `**/` reaches the app directory.
        Assert.Contains(".dapr/", Patterns(".gitignore"));
        Assert.Contains("**/.dapr/", Patterns(".dockerignore"));
    }

    [Theory]
    [InlineData("components/resiliency.yaml")]
    [InlineData("k8s/resiliency.yaml")]
    public void App_waits_for_an_actor_call_longer_than_the_sidecars_own_actor_call_timeout(string file)
    {
        var timeouts = (YamlMappingNode)Node(Documents(file).Single().Document, "spec", "policies", "timeouts")!;
        var actorCall = ((YamlScalarNode)timeouts.Children[new YamlScalarNode("actorCall")]).Value!;

        // Otherwise the app gives up first, and daprd's timeout and retries never get to act.
        Assert.True(new Service.Configuration.DaprOptions().ActorCallTimeout > TimeSpan.FromSeconds(int.Parse(actorCall.TrimEnd('s'))), actorCall);
    }

    [Theory]
    [InlineData("components/resiliency.yaml")]
    [InlineData("k8s/resiliency.yaml")]
    public void Resiliency_targets_refer_to_defined_policies(string file)
    {
        var (_, resiliency) = Documents(file).Single();
        Assert.Equal("Resiliency", Scalar(resiliency, "kind"));
        var policies = (YamlMappingNode)Node(resiliency, "spec", "policies")!;
        string[] Names(string kind) => ((YamlMappingNode?)Node(policies, kind))?.Children.Keys.Select(k => ((YamlScalarNode)k).Value!).ToArray() ?? [];

        var targets = new List<YamlNode>();
        targets.AddRange(((YamlMappingNode)Node(resiliency, "spec", "targets", "actors")!).Children.Values);
        targets.AddRange(((YamlMappingNode)Node(resiliency, "spec", "targets", "components")!).Children.Values
            .SelectMany(c => new[] { Node(c, "outbound"), Node(c, "inbound") }).OfType<YamlNode>());
        foreach (var target in targets)
        {
            if (Scalar(target, "timeout") is { } timeout)
            {
                Assert.Contains(timeout, Names("timeouts"));
            }

            if (Scalar(target, "retry") is { } retry)
            {
                Assert.Contains(retry, Names("retries"));
            }

            if (Scalar(target, "circuitBreaker") is { } breaker)
            {
                Assert.Contains(breaker, Names("circuitBreakers"));
            }
        }

        Assert.NotNull(Node(resiliency, "spec", "targets", "actors", "HandoffRunActor"));
    }

    [Theory]
    [InlineData("components", "components/resiliency.yaml")]
    [InlineData("k8s", "k8s/resiliency.yaml")]
    public void Completion_events_answered_retry_are_retried_by_the_sidecar_within_the_brokers_processing_timeout(string folder, string file)
    {
        var pubsubName = AppSettings()["Handoff"]!["Dapr"]!["PubSubName"]!.GetValue<string>();
        var (_, resiliency) = Documents(file).Single();

        // Without an inbound retry, daprd dead-letters an event on its first RETRY.
        var policyName = Scalar(resiliency, "spec", "targets", "components", pubsubName, "inbound", "retry");
        Assert.NotNull(policyName);
        var policy = Node(resiliency, "spec", "policies", "retries", policyName)!;
        Assert.Null(Node(policy, "matching")); // a RETRY answer carries no status code to match on
        var retries = int.Parse(Scalar(policy, "maxRetries")!, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(retries, 1, 100); // -1 would retry forever and never reach the dead-letter topic

        // Dapr's exponential back-off (cenkalti/backoff defaults): 500 ms, x1.5, capped at maxInterval, +-50 % jitter.
        var exponential = Scalar(policy, "policy") == "exponential";
        var interval = exponential ? TimeSpan.FromMilliseconds(500) : GoDuration(Scalar(policy, "duration") ?? "5s");
        var cap = exponential ? GoDuration(Scalar(policy, "maxInterval") ?? "60s") : interval;
        var worstCase = TimeSpan.Zero;
        for (var attempt = 0; attempt < retries; attempt++)
        {
            worstCase += (interval < cap ? interval : cap) * (exponential ? 1.5 : 1);
            interval *= exponential ? 1.5 : 1;
        }

        var pubsub = Components(folder).Single(c => Scalar(c.Document, "metadata", "name") == pubsubName).Document;
        var processingTimeout = ((YamlSequenceNode)Node(pubsub, "spec", "metadata")!).Children
            .Where(m => Scalar(m, "name") == "processingTimeout").Select(m => GoDuration(Scalar(m, "value")!)).DefaultIfEmpty(TimeSpan.FromSeconds(60)).Single();
        Assert.True(worstCase < processingTimeout, $"{file}: retries may take {worstCase}, past processingTimeout {processingTimeout}");
    }

    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Pubsub_trims_its_streams_as_it_publishes_so_they_cannot_fill_the_redis_the_actor_state_lives_in(string folder)
    {
        var pubsubName = AppSettings()["Handoff"]!["Dapr"]!["PubSubName"]!.GetValue<string>();
        var components = Components(folder).ToDictionary(c => Scalar(c.Document, "metadata", "name")!, c => c.Document);
        var stateStoreName = AppSettings()["Handoff"]!["Dapr"]!["StateStoreName"]!.GetValue<string>();
        string? Metadata(YamlNode component, string name) => ((YamlSequenceNode)Node(component, "spec", "metadata")!).Children
            .Where(m => Scalar(m, "name") == name).Select(m => Scalar(m, "value")).SingleOrDefault();
        var pubsub = components[pubsubName];

        // The premise: one Redis holds both, and the runbook has it never evict (actor state must not vanish).
        Assert.Equal(Metadata(components[stateStoreName], "redisHost"), Metadata(pubsub, "redisHost"));
        // pubsub.redis XADDs every event to a stream and only XACKs it: without maxLenApprox or streamTTL nothing ever
        // leaves the stream (dapr/components-contrib pubsub/redis/redis.go Publish; common/component/redis/settings.go
        // GetMinID). Completion events (up to Handoff:MaxRequestBodyBytes each), dead letters and coding_agents updates
        // would pile up until Redis, at maxmemory with noeviction, refuses the actor state's writes too.
        var ttl = Metadata(pubsub, "streamTTL");
        Assert.True(ttl is not null, $"{folder}: {pubsubName} sets no streamTTL: its streams grow without bound");
        // By age, not count (a burst could trim events not yet delivered), and far beyond a delivery's retries and
        // processingTimeout: an entry is trimmed whether or not it was delivered. The two settings exclude each other.
        Assert.InRange(GoDuration(ttl), TimeSpan.FromDays(1), TimeSpan.FromDays(30));
        Assert.Null(Metadata(pubsub, "maxLenApprox"));
    }

    /// <summary>
    /// A duration a component does not parse is as silent as a misspelt name. pubsub.redis reads redeliverInterval only
    /// as whole milliseconds: its field is <c>mapstructure:"-"</c> and ParseClientFromProperties takes it by
    /// strconv.ParseUint, so "15s" leaves the 15 s default in place (components-contrib v1.16.0
    /// common/component/redis/settings.go and redis.go). A bare number means milliseconds to the Redis components (dapr/kit
    /// config/decode.go) but seconds to bindings.http (dapr/kit metadata/duration.go): every other duration here is
    /// therefore written with its unit, as Go's time.ParseDuration reads it.
    /// </summary>
    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Component_durations_are_written_as_the_component_parses_them(string folder)
    {
        string[] withUnit = ["processingTimeout", "streamTTL", "responseTimeout", "dialTimeout", "readTimeout", "writeTimeout", "poolTimeout", "maxConnAge", "idleTimeout", "idleCheckFrequency", "redisMinRetryInterval", "redisMaxRetryInterval"];
        var checkedCount = 0;
        foreach (var (file, component) in Components(folder))
        {
            foreach (var item in ((YamlSequenceNode?)Node(component, "spec", "metadata"))?.Children ?? [])
            {
                var (name, value) = (Scalar(item, "name")!, Scalar(item, "value"));
                if (name == "redeliverInterval")
                {
                    Assert.Matches(@"^\d+$", value);
                }
                else if (withUnit.Contains(name))
                {
                    Assert.True(System.Text.RegularExpressions.Regex.IsMatch(value!, @"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$"), $"{file} {name}: {value}");
                }
                else
                {
                    continue;
                }

                checkedCount++;
            }
        }

        Assert.Equal(5, checkedCount); // pubsub's three, and each binding's responseTimeout
    }

    [Fact]
    public void Run_file_uses_only_documented_fields_and_points_at_existing_files()
    {
        var (_, run) = Documents("dapr.yaml").Single();

        Assert.Equal("1", Scalar(run, "version"));
        foreach (var path in ((YamlSequenceNode)Node(run, "common", "resourcesPaths")!).Children.Select(p => ((YamlScalarNode)p).Value!))
        {
            Assert.True(Directory.Exists(Path.Combine(RepositoryRoot, path)), path);
        }

        Assert.True(File.Exists(Path.Combine(RepositoryRoot, Scalar(run, "common", "configFilePath")!)));
        var app = (YamlMappingNode)((YamlSequenceNode)Node(run, "apps")!).Children.Single();
        foreach (var key in app.Children.Keys.Select(k => ((YamlScalarNode)k).Value!))
        {
            Assert.Contains(key, RunFileAppFields);
        }

        Assert.All(run.Children.Keys.Select(k => ((YamlScalarNode)k).Value!), key => Assert.Contains(key, RunFileFields));
        Assert.All(((YamlMappingNode)Node(run, "common")!).Children.Keys.Select(k => ((YamlScalarNode)k).Value!), key => Assert.Contains(key, RunFileCommonFields));

        Assert.True(Directory.Exists(Path.Combine(RepositoryRoot, Scalar(app, "appDirPath")!)));
        Assert.Equal("Dapr", Scalar(app, "env", "Handoff__Mode"));
    }

    [Fact]
    public void App_id_and_port_agree_across_run_file_manifests_and_service_settings()
    {
        var (_, run) = Documents("dapr.yaml").Single();
        var app = ((YamlSequenceNode)Node(run, "apps")!).Children.Single();
        var deployment = Documents("k8s/deployment.yaml").Single().Document;
        var annotations = Node(deployment, "spec", "template", "metadata", "annotations")!;
        var container = ((YamlSequenceNode)Node(deployment, "spec", "template", "spec", "containers")!).Children.Single();
        var env = ((YamlSequenceNode)Node(container, "env")!).Children.ToDictionary(e => Scalar(e, "name")!, e => Scalar(e, "value"));
        var appId = AppSettings()["Handoff"]!["Dapr"]!["AppId"]!.GetValue<string>();
        var port = new Uri(LaunchSettings()["profiles"]!["embedded"]!["applicationUrl"]!.GetValue<string>()).Port.ToString();

        Assert.Equal(appId, Scalar(app, "appID"));
        Assert.Equal(appId, Scalar(annotations, "dapr.io/app-id"));
        Assert.Equal(port, Scalar(app, "appPort"));
        Assert.Equal(port, Scalar(annotations, "dapr.io/app-port"));
        Assert.Equal(port, env["ASPNETCORE_HTTP_PORTS"]);
        Assert.Equal(port, Scalar(((YamlSequenceNode)Node(container, "ports")!).Children.Single(), "containerPort"));
        Assert.Contains($"localhost:{port}", string.Join(" ", ((YamlSequenceNode)Node(app, "command")!).Children));
        Assert.Equal("handoff-config", Scalar(annotations, "dapr.io/config"));
        Assert.Equal("handoff-config", Scalar(Documents("k8s/configuration.yaml").Single().Document, "metadata", "name"));
    }

    [Fact]
    public void Deployment_is_hardened_with_probes_and_limits()
    {
        var pod = Node(Documents("k8s/deployment.yaml").Single().Document, "spec", "template", "spec")!;
        var container = ((YamlSequenceNode)Node(pod, "containers")!).Children.Single();

        Assert.Equal("true", Scalar(pod, "securityContext", "runAsNonRoot"));
        Assert.Equal("true", Scalar(container, "securityContext", "readOnlyRootFilesystem"));
        Assert.Equal("false", Scalar(container, "securityContext", "allowPrivilegeEscalation"));
        // The app calls no Kubernetes API: a mounted token would only be there to be stolen.
        Assert.Equal("false", Scalar(pod, "automountServiceAccountToken"));
        Assert.NotNull(Scalar(container, "resources", "limits", "memory"));
        Assert.NotNull(Scalar(container, "resources", "requests", "cpu"));
        Assert.Equal("/healthz", Scalar(container, "livenessProbe", "httpGet", "path"));
        Assert.Equal("/readyz", Scalar(container, "readinessProbe", "httpGet", "path"));
        var annotations = Node(Documents("k8s/deployment.yaml").Single().Document, "spec", "template", "metadata", "annotations")!;
        Assert.NotNull(Scalar(annotations, "dapr.io/api-token-secret"));
        Assert.NotNull(Scalar(annotations, "dapr.io/app-token-secret"));
        Assert.Equal("/healthz", Scalar(annotations, "dapr.io/app-health-check-path"));
    }

    [Fact]
    public void A_pod_without_a_service_account_token_disables_daprds_builtin_kubernetes_secret_store()
    {
        var template = Node(Documents("k8s/deployment.yaml").Single().Document, "spec", "template")!;
        // daprd loads a `kubernetes` secret store in Kubernetes mode and exits if it cannot start, which it cannot without
        // the pod's service account token (dapr/dapr pkg/runtime/components.go appendBuiltinSecretStore). The components'
        // secretKeyRef are resolved by the operator, so the pod does not need that store.
        if (Scalar(template, "spec", "automountServiceAccountToken") == "false")
        {
            Assert.Equal("true", Scalar(template, "metadata", "annotations", "dapr.io/disable-builtin-k8s-secret-store"));
        }
    }

    [Fact]
    public void Sidecar_keeps_its_apis_while_the_app_drains_a_provider_call_and_the_pod_outlives_the_sidecar()
    {
        var template = Node(Documents("k8s/deployment.yaml").Single().Document, "spec", "template")!;
        // Without the block daprd stops taking API calls at SIGTERM: a turn in the middle of a provider call could not save.
        var block = GoDuration(Scalar(template, "metadata", "annotations", "dapr.io/block-shutdown-duration")!);
        var sidecarGrace = TimeSpan.FromSeconds(int.Parse(Scalar(template, "metadata", "annotations", "dapr.io/graceful-shutdown-seconds")!));
        var podGrace = TimeSpan.FromSeconds(int.Parse(Scalar(template, "spec", "terminationGracePeriodSeconds")!));
        var providerCall = ((YamlMappingNode)Node(Documents("k8s/resiliency.yaml").Single().Document, "spec", "policies", "timeouts")!)
            .Children.Single(entry => ((YamlScalarNode)entry.Key).Value == "providerCall").Value;
        var appDrain = new DaprOptions().ShutdownDrain;

        Assert.True(appDrain > GoDuration(((YamlScalarNode)providerCall).Value!), "the app must wait long enough for a provider call in flight at SIGTERM");
        // The default drain leaves the default grace whole, and time after it to record the answers.
        Assert.Equal(new DaprOptions().ProviderCallGrace, new DaprOptions().EffectiveProviderCallGrace);
        Assert.True(block > appDrain, "daprd must keep its APIs up while the app drains");
        Assert.True(podGrace > block + sidecarGrace, "Kubernetes must not kill the pod before daprd has shut down");
    }

    [Fact]
    public void Network_policy_admits_sidecars_only_to_daprds_internal_port_and_the_ingress_only_to_the_app()
    {
        var rules = ((YamlSequenceNode)Node(Documents("k8s/networkpolicy.yaml").Single().Document, "spec", "ingress")!).Children;
        var admitted = rules.Select(rule => (
            From: ((YamlSequenceNode)Node(rule, "from")!).Children.Select(peer => string.Join(",", ((YamlMappingNode)peer).Children.Keys.Select(k => ((YamlScalarNode)k).Value))).Single(),
            Ports: string.Join(",", ((YamlSequenceNode)Node(rule, "ports")!).Children.Select(port => Scalar(port, "port")))))
            .ToList();

        // daprd's API ports (3500, 50001) are bound to loopback by the injector: a rule for them would be dead, and a
        // wider one a hole. The control plane is dialled by daprd, not the other way round.
        Assert.Equal([("podSelector,namespaceSelector", "50002"), ("namespaceSelector", "5080")], admitted);
        var sidecars = ((YamlSequenceNode)Node(rules[0], "from")!).Children.Single();
        var labelRule = ((YamlSequenceNode)Node(sidecars, "podSelector", "matchExpressions")!).Children.Single();
        Assert.Equal(("dapr.io/app-id", "Exists"), (Scalar(labelRule, "key"), Scalar(labelRule, "operator")));
    }

    /// <summary>
    /// Service invocation into the app is admitted from the autofix API only, and only to the run routes (all of the
    /// API it calls is under <c>/runs</c>): without a policy daprd admits every app of the mesh, from any namespace,
    /// and hands the app its token with each call. daprd skips a policy without a namespace or trust domain
    /// (pkg/acl/acl.go ParseAccessControlSpec), which would leave the global deny to refuse the autofix API too.
    /// </summary>
    [Fact]
    public void Access_control_admits_only_the_autofix_api_and_only_to_the_run_routes()
    {
        var acl = Node(Documents("k8s/configuration.yaml").Single().Document, "spec", "accessControl")!;
        var policy = ((YamlSequenceNode)Node(acl, "policies")!).Children.Single();
        var operations = ((YamlSequenceNode)Node(policy, "operations")!).Children;

        Assert.Equal(("deny", "deny"), (Scalar(acl, "defaultAction"), Scalar(policy, "defaultAction")));
        Assert.All(new[] { "appId", "namespace", "trustDomain" }, field => Assert.False(string.IsNullOrEmpty(Scalar(policy, field)), field));
        Assert.Equal(Scalar(acl, "trustDomain"), Scalar(policy, "trustDomain"));
        var operation = Assert.Single(operations);
        Assert.Equal(("/runs/**", "allow"), (Scalar(operation, "name"), Scalar(operation, "action")));
        Assert.Equal(["GET", "POST"], ((YamlSequenceNode)Node(operation, "httpVerb")!).Children.Select(verb => ((YamlScalarNode)verb).Value));
    }

    /// <summary>
    /// The disruption budget and the spread across nodes select the Deployment's pods: a selector matching none leaves a
    /// drain free to evict both replicas at once, and nothing says so.
    /// </summary>
    [Fact]
    public void Disruption_budget_and_spread_select_the_deployments_pods_and_keep_one_up()
    {
        var deployment = Documents("k8s/deployment.yaml").Single().Document;
        var podLabels = ((YamlMappingNode)Node(deployment, "spec", "template", "metadata", "labels")!).Children
            .ToDictionary(pair => ((YamlScalarNode)pair.Key).Value!, pair => ((YamlScalarNode)pair.Value).Value!);
        bool SelectsPods(YamlNode selector) => ((YamlMappingNode)Node(selector, "matchLabels")!).Children
            .All(pair => podLabels.TryGetValue(((YamlScalarNode)pair.Key).Value!, out var value) && value == ((YamlScalarNode)pair.Value).Value);
        var budget = Documents("k8s/poddisruptionbudget.yaml").Single().Document;
        var spread = ((YamlSequenceNode)Node(deployment, "spec", "template", "spec", "topologySpreadConstraints")!).Children.Single();

        Assert.True(SelectsPods(Node(budget, "spec", "selector")!));
        Assert.True(SelectsPods(Node(spread, "labelSelector")!));
        Assert.Equal("1", Scalar(budget, "spec", "minAvailable"));
        Assert.True(int.Parse(Scalar(deployment, "spec", "replicas")!) > 1, "one replica under a budget of one blocks every drain");
        Assert.Equal("kubernetes.io/hostname", Scalar(spread, "topologyKey"));
    }

    [Fact]
    public void Deployment_uses_only_annotations_the_sidecar_injector_reads()
    {
        var annotations = (YamlMappingNode)Node(Documents("k8s/deployment.yaml").Single().Document, "spec", "template", "metadata", "annotations")!;
        var dapr = annotations.Children.Keys.Select(k => ((YamlScalarNode)k).Value!).Where(k => k.StartsWith("dapr.io/", StringComparison.Ordinal)).ToList();

        Assert.Contains("dapr.io/enabled", dapr);
        Assert.Equal([], dapr.Where(name => !InjectorAnnotations.Contains(name)));
    }

    [Theory]
    [InlineData("components/config.yaml")]
    [InlineData("components/resiliency.yaml")]
    [InlineData("k8s/configuration.yaml")]
    [InlineData("k8s/resiliency.yaml")]
    public void Configuration_and_resiliency_use_only_fields_daprs_types_have(string file)
    {
        var (_, resource) = Documents(file).Single();

        Assert.Equal("dapr.io/v1alpha1", Scalar(resource, "apiVersion"));
        Assert.Equal([], UndocumentedSpecFields(resource));
    }

    /// <summary>
    /// Around the metadata names: a component's, configuration's or resiliency's own fields (scopes, auth, the spec's
    /// type, version and metadata items with their secretKeyRef), which daprd drops as silently when misspelt.
    /// </summary>
    [Theory]
    [MemberData(nameof(ComponentFolders))]
    public void Dapr_resources_use_only_fields_their_types_have_at_the_top_and_in_a_components_spec(string folder)
    {
        var resources = Documents(folder).Where(d => Scalar(d.Document, "apiVersion") == "dapr.io/v1alpha1").ToList();

        Assert.Equal(["Component", "Configuration", "Resiliency"], resources.Select(r => Scalar(r.Document, "kind")!).Distinct().Order());
        foreach (var (file, resource) in resources)
        {
            var problems = UndocumentedRootFields(resource).Concat(Scalar(resource, "kind") == "Component" ? UndocumentedSpecFields(resource) : []).ToList();
            Assert.True(problems.Count == 0, $"{file} {Scalar(resource, "metadata", "name")}: {string.Join(", ", problems)}");
        }
    }

    [Fact]
    public void Resource_checker_rejects_a_misspelt_scopes_auth_or_metadata_item_field()
    {
        var component = Resource("""
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: { name: broken }
            spec:
              type: bindings.http
              version: v1
              initTimout: 5s
              metadata:
                - name: securityToken
                  secretKeyref: { name: a, key: b }
                - name: url
                  secretKeyRef: { name: a, keys: b }
            auth: { secretstore: secretstore }
            scope: [handoff]
            """);

        Assert.Equal(["auth.secretstore", "scope"], UndocumentedRootFields(component));
        Assert.Equal(["Component.initTimout", "Component.metadata[0].secretKeyref", "Component.metadata[1].secretKeyRef.keys"], UndocumentedSpecFields(component));
    }

    [Fact]
    public void Spec_checker_rejects_a_misspelt_field_at_any_depth()
    {
        var resource = Resource("""
            apiVersion: dapr.io/v1alpha1
            kind: Resiliency
            metadata: { name: broken }
            spec:
              policies:
                retries:
                  again: { policy: constant, maxRetry: 3 }
              targets:
                actors:
                  SomeActor: { timeout: t, circuitBreakerScop: id }
                components:
                  pubsub:
                    inbund: { retry: again }
            """);

        var problems = UndocumentedSpecFields(resource);

        Assert.Equal(
            ["Resiliency.policies.retries.again.maxRetry", "Resiliency.targets.actors.SomeActor.circuitBreakerScop", "Resiliency.targets.components.pubsub.inbund"],
            problems);
    }

    [Theory]
    [InlineData("k8s/deployment.yaml", "Deployment")]
    [InlineData("k8s/service.yaml", "Service")]
    [InlineData("k8s/networkpolicy.yaml", "NetworkPolicy")]
    [InlineData("k8s/poddisruptionbudget.yaml", "PodDisruptionBudget")]
    [InlineData("k8s/kustomization.yaml", "Kustomization")]
    public void Kubernetes_manifests_use_only_fields_of_the_kubernetes_api_types(string file, string kind)
    {
        var (_, manifest) = Documents(file).Single();

        var problems = UnknownKubernetesFields(manifest);

        Assert.Equal(kind, Scalar(manifest, "kind"));
        Assert.True(problems.Count == 0, $"{file}: {string.Join(", ", problems)}");
    }

    [Fact]
    public void Kubernetes_checker_names_a_misspelt_field_at_any_depth_an_object_it_cannot_check_and_a_wrong_api_version()
    {
        var stream = new YamlStream();
        stream.Load(new StringReader("""
            apiVersion: apps/v1
            kind: Deployment
            metadata: { name: broken, labels: { any-label: x } }
            spec:
              replicas: { count: 2 }
              template:
                spec:
                  securityContext: { runAsNonroot: true }
                  affinity: { nodeAffinity: {} }
                  containers:
                    - name: app
                      readinessProbe: { httpget: { path: /readyz, port: http } }
                      resources: { limits: { cpu: "1" } }
            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: { name: broken }
            spec:
              ingress:
                - from: [{ podselector: {} }]
            ---
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            labels: [{ pairs: { a: b }, includeSelector: true }]
            ---
            apiVersion: apps/v1
            kind: Service
            """));

        var problems = stream.Documents.Select(document => UnknownKubernetesFields((YamlMappingNode)document.RootNode)).ToList();

        Assert.Equal(
            [
                "spec.replicas: an object where a scalar goes",
                "spec.template.spec.securityContext.runAsNonroot",
                "spec.template.spec.affinity: type Affinity is not listed",
                "spec.template.spec.containers[0].readinessProbe.httpget",
            ],
            problems[0]);
        Assert.Equal(["spec.ingress[0].from[0].podselector"], problems[1]);
        Assert.Equal(["labels[0].includeSelector"], problems[2]);
        Assert.Equal(["apps/v1 Service: not a kind and apiVersion listed"], problems[3]);
    }

    [Fact]
    public void Kustomization_lists_every_manifest_but_the_secrets_example()
    {
        var listed = ((YamlSequenceNode)Node(Documents("k8s/kustomization.yaml").Single().Document, "resources")!).Children.Select(r => ((YamlScalarNode)r).Value!).Order();
        var present = Directory.GetFiles(Path.Combine(RepositoryRoot, "k8s"), "*.yaml").Select(Path.GetFileName)
            .Where(f => f is not ("kustomization.yaml" or "secrets.example.yaml")).Order();

        Assert.Equal(present, listed);
    }

    [Fact]
    public void Daprd_takes_request_bodies_as_large_as_the_actor_calls_the_app_makes()
    {
        // The app hands a run to its actor through daprd's actor API, escaped as the SDK writes it: up to six times
        // Handoff:MaxRequestBodyBytes plus 1 MiB (the limit the app's own actor routes take). daprd refuses a larger
        // request body than its --max-body-size (dapr.io/max-body-size; dapr/dapr pkg/runtime DefaultMaxRequestBodySize,
        // 4 MiB): a large event would be redelivered, and refused again, until dead-lettered.
        var options = new HandoffOptions { MaxRequestBodyBytes = AppSettings()["Handoff"]!["MaxRequestBodyBytes"]!.GetValue<long>() };
        var needed = Extensions.HandoffServiceExtensions.ActorCallBodyLimit(options);
        var annotations = Node(Documents("k8s/deployment.yaml").Single().Document, "spec", "template", "metadata", "annotations")!;
        var app = ((YamlSequenceNode)Node(Documents("dapr.yaml").Single().Document, "apps")!).Children.Single();

        Assert.True(Quantity(Scalar(annotations, "dapr.io/max-body-size")) >= needed, $"k8s/deployment.yaml: dapr.io/max-body-size below {needed} bytes");
        Assert.True(Quantity(Scalar(app, "maxBodySize")) >= needed, $"dapr.yaml: maxBodySize below {needed} bytes");
    }

    /// <summary>A Kubernetes resource quantity as daprd reads --max-body-size ("8Mi", "8M", "400"); its default when unset.</summary>
    private static long Quantity(string? text)
    {
        text ??= "4Mi";
        var units = new Dictionary<string, long> { ["Ki"] = 1L << 10, ["Mi"] = 1L << 20, ["Gi"] = 1L << 30, ["k"] = 1000, ["M"] = 1000_000, ["G"] = 1000_000_000 };
        var unit = units.Keys.OrderByDescending(u => u.Length).FirstOrDefault(u => text.EndsWith(u, StringComparison.Ordinal));
        return long.Parse(unit is null ? text : text[..^unit.Length], System.Globalization.CultureInfo.InvariantCulture) * (unit is null ? 1 : units[unit]);
    }

    private static IEnumerable<(string File, YamlMappingNode Document)> Components(string folder) =>
        Documents(folder).Where(d => Scalar(d.Document, "kind") == "Component");

    /// <summary>One Dapr resource written in a test, as the checkers read a file's document.</summary>
    private static YamlMappingNode Resource(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        return (YamlMappingNode)Assert.Single(stream.Documents).RootNode;
    }
}
