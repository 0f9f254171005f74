import PushlineCore
print("pushline \(PushlineVersion.daemon)")
