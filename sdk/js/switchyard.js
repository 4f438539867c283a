// Switchyard browser SDK
