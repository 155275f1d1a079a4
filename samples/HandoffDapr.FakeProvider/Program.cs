// A local stand-in for Cursor's background agents API, for the quick start and the crash test.
// dotnet run --project samples/HandoffDapr.FakeProvider [--FakeProvider:LaunchLatency=00:00:03]
HandoffDapr.FakeProvider.FakeProviderApp.Build(args).Run();
